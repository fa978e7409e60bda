"""Shipping models: ONNX export checked with onnxruntime, safetensors export, and the shipped
toon-128 model (loading by name, its card, `fexgan models`, `fexgan transfer toon-128`, the replaced name toon-64, the judge)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import fexgan
from fexgan.config import ModelConfig
from fexgan.data import toon
from fexgan.data.images import from_pil, to_model_input, to_uint8
from fexgan.data.sources import load_source, toon_options
from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS
from fexgan.files import checkpoint as ckpt
from fexgan.generation import export as ex
from fexgan.metrics.groundtruth import compare
from fexgan.metrics.judge import Judge
from fexgan.presets import build_config
from fexgan.training.loop import train

FEXGAN = Path(sys.executable).parent / "fexgan"
NEUTRAL = EXPRESSIONS.index("neutral")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(FEXGAN), *args], capture_output=True, text=True, timeout=300)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model file of a briefly trained tiny model (trained, so its outputs are not near-constant)."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    train(build_config("tiny", overrides=["data.source=toon:4", "run.steps=30", "run.device=cpu", "run.threads=1"]), out, progress=False)
    return out / "model.safetensors"


@pytest.fixture(scope="module")
def onnx_export(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`fexgan export` of the tiny model to ONNX, discriminator included, through the real CLI."""
    out = tmp_path_factory.mktemp("onnx")
    done = run_cli("export", str(tiny), "--format", "onnx", "--out", str(out), "--discriminator")
    assert done.returncode == 0, done.stderr
    return out, done.stderr


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def toon_faces(size: int) -> list[Image.Image]:
    """Each default character's neutral face with a variation the training set does not have (seed 1)."""
    return [toon.render_face(ch, "neutral", toon.variation_for(1, c, NEUTRAL, 1), size)
            for c, ch in enumerate(toon.make_characters(6))]


# ----------------------------------------------------------------------------- ONNX
def test_cli_writes_every_graph_and_reports_parity(onnx_export: tuple[Path, str]) -> None:
    out, log = onnx_export
    names = ("encoder", "decoder", "generator", "discriminator")
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{n}.onnx" for n in names] + ["model.json"])
    card = json.loads((out / "model.json").read_text())
    for name in names:
        assert f"{name}.onnx: max abs difference onnxruntime vs PyTorch" in log
        assert 0 <= card["graphs"][name]["max_abs_diff"] < ex.PARITY_TOLERANCE
    assert "wrote" in log and not list(out.glob(".export-*"))   # the staging folder is gone


@pytest.mark.parametrize("batch", [1, 3])
def test_graphs_match_pytorch_on_real_faces_at_any_batch(onnx_export: tuple[Path, str], tiny: Path, batch: int) -> None:
    out, _ = onnx_export
    model = fexgan.load(tiny, "cpu")
    G, D = model.generator, model.discriminator
    data = load_source("toon:4", 32)
    x = to_model_input(data.images[:batch * 7:7])                      # different characters / expressions
    src = torch.eye(7)[data.expression[:batch * 7:7]]
    tgt = torch.eye(7)[torch.arange(batch) % 7] * 0.5 + torch.eye(7)[(torch.arange(batch) + 3) % 7] * 0.5
    z = torch.randn(batch, model.config.latent_dim, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = {"encoder": G.encode(x, src), "decoder": (G.decode(z, tgt),),
                    "generator": (G.transfer(x, src, tgt),), "discriminator": D(x)}
    feeds = {"encoder": {"image": x, "source_affect": src}, "decoder": {"z": z, "target_affect": tgt},
             "generator": {"image": x, "source_affect": src, "target_affect": tgt}, "discriminator": {"image": x}}
    outputs = {"encoder": ["mu", "log_sigma"], "decoder": ["generated"], "generator": ["generated"],
               "discriminator": ["real_fake_logit", "expression_logits"]}
    for name, feed in feeds.items():
        s = session(out / f"{name}.onnx")
        assert [i.name for i in s.get_inputs()] == list(feed) and [o.name for o in s.get_outputs()] == outputs[name]
        assert all(i.shape[0] == "batch" for i in s.get_inputs())
        got = s.run(None, {k: v.numpy() for k, v in feed.items()})
        for a, b in zip(got, expected[name]):
            assert a.shape == tuple(b.shape)
            assert np.abs(a - b.numpy()).max() < 1e-4, name


def test_sidecar_is_enough_to_run_a_transfer_without_fexgan(onnx_export: tuple[Path, str], tiny: Path) -> None:
    """Preprocess as model.json says (composite over the background, x / 127.5 - 1), run
    generator.onnx, post-process: the same pixels as `fexgan.load(...).transfer`."""
    out, _ = onnx_export
    card = json.loads((out / "model.json").read_text())
    assert card["format"] == "fexgan-export-1" and card["classes"] == list(EXPRESSIONS)
    assert (card["image_size"], card["latent_dim"], card["input"]["background"]) == (32, 16, [255, 255, 255])
    assert "x / 127.5 - 1" in card["input"]["normalisation"] and card["input"]["channels"] == "RGB"
    assert card["graphs"]["generator"]["inputs"] == {"image": ["batch", 3, 32, 32], "source_affect": ["batch", 7],
                                                     "target_affect": ["batch", 7]}
    assert card["model_config"]["width"] == 0.0625 and card["training"]["data"] == "toon:4"

    face = toon_faces(card["image_size"])[2]
    canvas = Image.new("RGBA", face.size, tuple(card["input"]["background"]) + (255,))
    canvas.alpha_composite(face)
    rgb = np.asarray(canvas.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)[None] / 127.5 - 1
    affect = lambda name: np.eye(7, dtype=np.float32)[[card["classes"].index(name)]]
    y = session(out / "generator.onnx").run(None, {"image": rgb, "source_affect": affect("neutral"),
                                                   "target_affect": affect("joy")})[0]
    pixels = np.clip((y[0].transpose(1, 2, 0) + 1) * 127.5, 0, 255).round().astype(np.uint8)
    expected = fexgan.load(tiny, "cpu", precision="fp32").transfer(face, "joy", source="neutral")
    assert expected.mode == "RGBA"  # the transparent toon face keeps its silhouette (the matte is fexgan's, not ONNX's)
    expected = np.asarray(expected.convert("RGB"))
    opaque = np.asarray(face)[..., 3] == 255
    assert np.abs(pixels.astype(int) - expected.astype(int))[opaque].max() <= 1


def test_the_edit_design_exports_with_parity(tmp_path: Path) -> None:
    """The edit design's generator graph takes the source's pixels into its decoder: it matches
    `transfer` on real faces, and its decoder graph draws alone as `decode` without a source does."""
    run = tmp_path / "edit"
    train(build_config("tiny", overrides=["model.generator=edit", "run.steps=20", "run.device=cpu", "run.threads=1"]), run,
          progress=False)
    out = tmp_path / "onnx"
    parity = ex.export(run, "onnx", out).parity
    assert sorted(parity) == ["decoder", "encoder", "generator"] and max(parity.values()) < ex.PARITY_TOLERANCE
    model = fexgan.load(run, "cpu", precision="fp32")
    G, x = model.generator, to_model_input(load_source("toon:4", 32).images[:21:7])
    src, tgt = torch.eye(7)[[0, 0, 0]], torch.eye(7)[[3, 4, 6]]
    z = torch.randn(3, model.config.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        moved, alone = G.transfer(x, src, tgt), G.decode(z, tgt)
    assert not torch.equal(moved, x)  # trained: its change is no longer zero, so the graphs check the head too
    got = session(out / "generator.onnx").run(None, {"image": x.numpy(), "source_affect": src.numpy(),
                                                     "target_affect": tgt.numpy()})[0]
    drawn = session(out / "decoder.onnx").run(None, {"z": z.numpy(), "target_affect": tgt.numpy()})[0]
    assert np.abs(got - moved.numpy()).max() < 1e-4 and np.abs(drawn - alone.numpy()).max() < 1e-4


def test_a_parity_failure_is_loud_and_writes_nothing(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ex, "PARITY_TOLERANCE", -1.0)   # no difference can pass: the failure path runs for real
    with pytest.raises(ex.ParityError, match=r"encoder.onnx differs from PyTorch by .* nothing was written"):
        ex.export(tiny, "onnx", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------------------- safetensors
@pytest.mark.parametrize("half", [False, True])
def test_safetensors_export_loads_back(tiny: Path, tmp_path: Path, half: bool) -> None:
    result = ex.export(tiny, "safetensors", tmp_path, discriminator=not half, half=half)
    assert [p.name for p in result.files] == ["model.safetensors", "model.json"]
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
        has_disc = any(k.startswith("discriminator.") for k in f.keys())
    assert dtypes == ({"F16", "I64"} if half else {"F32", "I64"}) and has_disc == (not half)
    assert json.loads((tmp_path / "model.json").read_text())["weights"]["dtype"] == ("float16" if half else "float32")
    original, copy = fexgan.load(tiny, "cpu"), fexgan.load(tmp_path / "model.safetensors", "cpu")
    assert all(p.dtype == torch.float32 for p in copy.generator.parameters())
    x = from_pil(toon_faces(32), 32)
    a, b = (m.transfer_tensor(x, torch.eye(7), source="neutral") for m in (original, copy))
    assert (a - b).abs().max() < (1e-2 if half else 1e-7)
    if half:   # a generator-only file has no discriminator to export
        with pytest.raises(UserError, match="no discriminator to export"):
            ex.export(tmp_path / "model.safetensors", "onnx", tmp_path / "again", discriminator=True)


@pytest.mark.parametrize("args, message", [
    (["--format", "tflite"], "unknown export format 'tflite'"),
    (["--half"], "--half stores fp16 weights and applies to --format safetensors only"),
    (["--opset", "9"], "opset 9 is out of range"),
])
def test_bad_options_are_one_line_exit_2(tiny: Path, tmp_path: Path, args: list[str], message: str) -> None:
    done = run_cli("export", str(tiny), "--out", str(tmp_path / "out"), *args)
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_bad_paths_are_one_line_exit_2(tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    for args, message in ((["no-such-model.safetensors", "--out", str(tmp_path / "a")], "model 'no-such-model.safetensors' not found"),
                          ([str(tiny), "--out", str(tmp_path / "file")], "exists and is not a folder"),
                          ([str(tiny), "--format", "safetensors", "--out", str(tmp_path / "file" / "sub")], "cannot write to")):
        done = run_cli("export", *args)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


# ----------------------------------------------------------------------------- the shipped model
def test_shipped_model_loads_by_name_as_float32_with_its_card() -> None:
    model = fexgan.load("toon-128", "cpu")
    assert model.path.parent == ex.pretrained_folder() and model.path.stat().st_size < 8_000_000  # fp16, 128 px: 5.5 MB
    assert model.discriminator is not None     # transfers can recognise the source expression
    tensors = [*model.generator.state_dict().values(), *model.discriminator.state_dict().values()]
    assert {t.dtype for t in tensors if t.is_floating_point()} == {torch.float32}
    card = ex.model_card("toon-128")
    assert ModelConfig.from_dict(card["config"]["model"]) == model.config  # settings it leaves out: their defaults
    assert card["command"].startswith("fexgan train --data toon --preset cpu")
    assert card["training"]["steps"] == model.summary["steps"] and card["training"]["device"]
    metrics = card["evaluation"]["metrics"]
    assert {"expression_accuracy", "identity_preservation", "fid_transfer", "groundtruth_l1"} <= set(metrics)
    assert all(m["n"] > 0 for m in metrics.values())


def test_the_replaced_shipped_name_says_which_model_replaced_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'toon-64' was replaced by 'toon-128'.*use toon-128"):
        fexgan.load("toon-64", "cpu")
    toon_faces(64)[0].save(tmp_path / "face.png")
    done = run_cli("transfer", "toon-64", str(tmp_path / "face.png"), "--to", "joy", "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "toon-128" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_fexgan_models_lists_the_shipped_model() -> None:
    done = run_cli("models")
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()[:2]
    card = ex.model_card("toon-128")
    assert header.split()[0] == "name" and row.split()[0] == "toon-128"
    assert f"{card['evaluation']['metrics']['expression_accuracy']['value']:.3f}" in row.split()


def test_cli_transfer_with_the_shipped_model_name(tmp_path: Path) -> None:
    face = toon_faces(128)[4]
    face.save(tmp_path / "face.png")
    done = run_cli("transfer", "toon-128", str(tmp_path / "face.png"), "--to", "joy", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    written = Image.open(tmp_path / "out" / "face_joy.png")
    assert written.size == (128, 128) and written.mode == "RGBA"  # the toon face is transparent: so is its output
    expected = fexgan.load("toon-128", "cpu").transfer(tmp_path / "face.png", "joy")
    assert np.array_equal(np.asarray(written), np.asarray(expected))


@pytest.mark.slow
def test_shipped_model_transfers_are_judged_correct(judge: Judge) -> None:
    """Six characters' unseen neutral faces (two variations each) to every expression: the judge of
    the same six characters (trained on real toon faces only, at 64 px: the size the evaluation's judge
    looks at) must recognise >= 90% of the targets."""
    model = fexgan.load("toon-128", "cpu")
    assert judge.identities == tuple(model.summary["identities"])
    faces = [toon.render_face(ch, "neutral", toon.variation_for(1, c, NEUTRAL, n), 128)
             for c, ch in enumerate(toon.make_characters(6)) for n in (1, 2)]
    moved = model.transfer_tensor(model.prepare(faces), torch.eye(7), source="neutral").flatten(0, 1)
    hits = judge.predict(moved)[0].argmax(1) == torch.arange(7).repeat(len(faces))
    assert float(hits.float().mean()) >= 0.9, f"judged correct: {float(hits.float().mean()):.3f} of {len(hits)}"


# ----------------------------------------------------------------------------- the shipped any-character model
@pytest.mark.slow
def test_the_any_character_model_keeps_characters_it_never_saw(any_judge: Judge) -> None:
    """toon-any-64 (the edit design) on new variations of the four characters held out of its training,
    to every other expression: against the renderer's truth it beats handing back the input by over
    1 dB, and the judge (trained on real images of all the data's characters, never on generated ones)
    finds each character's identity and the target expression."""
    model = fexgan.load("toon-any-64", "cpu", precision="fp32")
    assert model.config.generator == "edit" and len(model.summary["held_out"]) == 8
    chars = toon.make_characters(toon_options(model.summary["data"].removeprefix("toon:"))[1])
    assert any_judge.identities == tuple(ch.name for ch in chars)   # the judge of the model's characters
    idx = [any_judge.identities.index(name) for name in model.summary["held_out"][:4]]
    variations = [toon.variation_for(1, i, NEUTRAL, 1) for i in idx]    # seed 1: not the dataset's images
    faces = [toon.render_face(chars[i], "neutral", v, 64) for i, v in zip(idx, variations)]
    moved = model.transfer_tensor(model.prepare(faces), torch.eye(7), source="neutral")
    truth = torch.stack([from_pil([toon.render_face(chars[i], t, v, 64) for t in range(7)], 64)
                         for i, v in zip(idx, variations)])
    changed = torch.arange(7) != NEUTRAL
    want = to_uint8(truth[:, changed].flatten(0, 1))
    gen = compare(to_uint8(moved[:, changed].flatten(0, 1)), want)["psnr"].mean()
    copy = compare(to_uint8(model.prepare(faces)).repeat_interleave(6, 0), want)["psnr"].mean()
    assert float(gen) >= float(copy) + 1.0, (float(gen), float(copy))
    who, what = torch.tensor(idx).repeat_interleave(7), torch.arange(7).repeat(4)

    def judged(images: torch.Tensor) -> tuple[float, float]:
        expr_p, id_p = any_judge.predict(images)
        return float((id_p.argmax(1) == who).float().mean()), float((expr_p.argmax(1) == what).float().mean())

    # against the judge's reading of the true targets: its training (seeded) differs between instruction
    # sets, and on some it misreads a true target's identity too
    (gen_id, gen_expr), (true_id, _) = judged(moved.flatten(0, 1)), judged(truth.flatten(0, 1).to(moved))
    assert gen_id >= min(0.95, true_id) - 0.05 and gen_expr >= 0.85, (gen_id, true_id, gen_expr)
    card = ex.model_card("toon-any-64")["evaluation_held_out"]["metrics"]
    assert card["groundtruth_psnr"]["value"] >= card["groundtruth_psnr_copy"]["value"] + 1.0


def test_the_web_demo_defaults_to_the_shipped_any_character_model() -> None:
    from fexgan.cli.main import SERVE_MODEL

    assert SERVE_MODEL == "toon-any-64" and SERVE_MODEL in ckpt.shipped_models()
    done = run_cli("serve", "--help")
    assert done.returncode == 0 and "toon-any-64" in done.stdout, done.stdout
