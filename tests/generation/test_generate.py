"""Generation end to end: a tiny model trained once, then every API function and every command on
real files (sizes, determinism, mix/morph consistency, GIFs, figures, one-line errors)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import draw_face
from PIL import Image, ImageDraw

import fexgan
from fexgan.data import toon
from fexgan.data.images import to_model_input
from fexgan.data.sources import load_source
from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS
from fexgan.files import checkpoint as ckpt
from fexgan.files.checkpoint import save_model
from fexgan.generation import figures, inference
from fexgan.generation.animation import animation_bytes, save_frames
from fexgan.generation.inference import FExGAN
from fexgan.metrics.groundtruth import TOON_SEED
from fexgan.nets.networks import Discriminator, Generator
from fexgan.presets import build_config, load_run_config

PAD, LABEL = 4, 26          # image_grid's padding, and a label row's height for 128 px cells
CELL = figures.FIGURE_CELL


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fexgan", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def _px(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def _same(a: Image.Image, b: Image.Image, tol: int = 1) -> bool:
    """Equal up to rounding (different batch sizes may round a pixel differently)."""
    return a.size == b.size and int(np.abs(_px(a) - _px(b)).max()) <= tol


def _differ(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(_px(a) - _px(b)).mean())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained for 40 steps (checkpoints every 20) on the tiny preset's toon faces. Its model
    files hold the raw generator: averaged over these few steps its outputs barely follow the affect,
    and the tests here need outputs that do (a morph's frames must differ)."""
    cfg = build_config("tiny", overrides=["run.steps=40", "logging.checkpoint_every=20", "optimiser.ema_decay=0"])
    out = tmp_path_factory.mktemp("gen") / "run"
    from fexgan.training.loop import train

    train(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def model(run: Path) -> FExGAN:
    return fexgan.load(run, device="cpu")


@pytest.fixture(scope="module")
def lively(tmp_path_factory: pytest.TempPathFactory) -> FExGAN:
    """A model file whose every output depends on image, latent and affect.

    At their DCGAN initialisation, and after a few seconds of training, tiny networks draw nearly the
    same image whatever they are given, so equality checks on them would pass vacuously. Weights of
    std 2/sqrt(fan_in) keep the signal alive through every layer.
    """
    cfg = build_config("tiny").model
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    for net in (G, D):
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                torch.nn.init.normal_(m.weight, 0.0, 2.0 / m.weight[0].numel() ** 0.5)
    path = tmp_path_factory.mktemp("lively") / "lively.safetensors"
    save_model(path, G, D, cfg, {"note": "test"})
    return FExGAN.load(path, "cpu")


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Input files as users have them: an RGBA PNG of another size, a wide RGB JPEG, a non-image."""
    root = tmp_path_factory.mktemp("inputs")
    draw_face(0, EXPRESSIONS.index("neutral"), size=48).save(root / "a.png")
    draw_face(1, EXPRESSIONS.index("joy"), size=40).save(root / "b.png")
    wide = Image.new("RGB", (50, 30), (255, 255, 255))
    wide.paste(draw_face(2, 0, size=30).convert("RGB"), (10, 0))
    wide.save(root / "wide.jpg", quality=95)
    (root / "notes.txt").write_text("not an image")
    return {"a": root / "a.png", "b": root / "b.png", "wide": root / "wide.jpg", "text": root / "notes.txt"}


# ----------------------------------------------------------------------------- loading
def test_load_run_folder_model_file_checkpoint_and_errors(run: Path, model: FExGAN, tmp_path: Path) -> None:
    assert model.path == run / "model.safetensors"
    assert model.config.image_size == 32 and model.classes == EXPRESSIONS
    assert model.discriminator is not None and model.summary["steps"] == 40
    assert model.device == torch.device("cpu") and not model.generator.training
    assert FExGAN.load(run / "model.safetensors", "cpu").path == run / "model.safetensors"

    partial = tmp_path / "partial"          # a run still training: no model.safetensors yet
    shutil.copytree(run / "checkpoints", partial / "checkpoints")
    assert FExGAN.load(partial, "cpu").path.name == "step_0000040.safetensors"

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no model.safetensors and no checkpoint"):
        FExGAN.load(tmp_path / "empty", "cpu")
    with pytest.raises(UserError, match=r"run folder .* model file, or a shipped model name \(shipped: "):
        fexgan.load("no-such-model")
    (tmp_path / "fake.safetensors").write_text("hello")
    with pytest.raises(UserError, match="not a readable safetensors"):
        fexgan.load(tmp_path / "fake.safetensors")


def test_shipped_model_by_name(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "fexgan"
    (package / "pretrained").mkdir(parents=True)
    shutil.copy(run / "model.safetensors", package / "pretrained" / "toon-tiny.safetensors")
    monkeypatch.setattr(ckpt.resources, "files", lambda name: package)
    assert ckpt.shipped_models() == ["toon-tiny"]
    assert fexgan.load("toon-tiny", "cpu").path == package / "pretrained" / "toon-tiny.safetensors"
    with pytest.raises(UserError, match=r"shipped: toon-tiny"):
        fexgan.load("toon-big")


# ----------------------------------------------------------------------------- API
def test_sample_shapes_and_seed(model: FExGAN, lively: FExGAN) -> None:
    joy = model.sample("joy", n=5, seed=3)
    assert len(joy) == 5 and all(im.size == (32, 32) and im.mode == "RGB" for im in joy)
    rows = lively.sample("all", n=3, seed=1)
    assert len(rows) == 7 and all(len(r) == 3 for r in rows)
    again = lively.sample("all", n=3, seed=1)
    assert all(_same(a, b, 0) for r1, r2 in zip(rows, again) for a, b in zip(r1, r2))
    assert _differ(lively.sample("joy", 1, seed=1)[0], lively.sample("joy", 1, seed=2)[0]) > 2
    assert _differ(rows[0][0], rows[3][0]) > 1            # same latent, another expression
    assert model.sample_tensor("anger=0.5,sadness=0.5", 4).shape == (4, 3, 32, 32)
    for bad in (0, 2000):
        with pytest.raises(UserError, match="number of samples"):
            model.sample("joy", n=bad)


def test_classify_and_encode(lively: FExGAN, faces: dict[str, Path]) -> None:
    p = lively.classify(faces["a"])
    assert list(p) == list(EXPRESSIONS) and abs(sum(p.values()) - 1) < 1e-5
    both = lively.classify([faces["a"], Image.open(faces["b"])])
    assert len(both) == 2 and both[0] == pytest.approx(p)
    z = lively.encode(faces["a"])
    assert z.shape == (16,) and lively.encode([faces["a"], faces["b"]]).shape == (2, 16)
    predicted = max(p, key=p.get)
    assert torch.equal(z, lively.encode(faces["a"], source=predicted))
    other = next(e for e in EXPRESSIONS if e != predicted)
    assert not torch.allclose(z, lively.encode(faces["a"], source=other))
    drawn = lively.encode(faces["a"], sample_latent=True, seed=5)
    assert torch.equal(drawn, lively.encode(faces["a"], sample_latent=True, seed=5))
    assert not torch.allclose(drawn, z) and not torch.allclose(drawn, lively.encode(faces["a"], sample_latent=True, seed=6))


def test_transfer_sizes_targets_and_keep_size(lively: FExGAN, faces: dict[str, Path]) -> None:
    joy = lively.transfer(faces["a"], to="joy")
    assert isinstance(joy, Image.Image) and joy.size == (32, 32)
    strip = lively.transfer(faces["a"], to="all")
    assert len(strip) == 7 and _same(strip[3], joy)
    assert _differ(strip[0], strip[3]) > 1
    batch = lively.transfer([faces["a"], faces["b"], faces["wide"]], to=["joy", "anger=0.5,sadness=0.5"])
    assert len(batch) == 3 and all(len(r) == 2 for r in batch) and _same(batch[0][0], joy)
    kept = lively.transfer([faces["wide"], faces["a"]], to="joy", keep_size=True)
    assert [im.size for im in kept] == [(50, 30), (48, 48)]
    # the same seed draws the same latent; the mean latent is the default
    s1 = lively.transfer(faces["a"], "joy", sample_latent=True, seed=1)
    assert _same(s1, lively.transfer(faces["a"], "joy", sample_latent=True, seed=1), 0)
    assert _differ(s1, joy) > 0.5
    out = lively.transfer_tensor(lively.prepare([faces["a"], faces["b"]]), torch.eye(7)[:3], source="neutral")
    assert out.shape == (2, 3, 3, 32, 32) and out.min() >= -1 and out.max() <= 1


def test_mix_of_a_pure_expression_equals_transfer(lively: FExGAN, faces: dict[str, Path]) -> None:
    joy = lively.transfer(faces["a"], to="joy")
    vector = [0.0] * 7
    vector[EXPRESSIONS.index("joy")] = 1.0
    for spec in ("joy", "joy=1", {"joy": 1.0}, vector, torch.tensor(vector), 3):
        assert _same(lively.mix(faces["a"], spec), joy, 0), spec
    mixed = lively.mix(faces["a"], "anger=0.5,sadness=0.5")
    assert _differ(mixed, lively.mix(faces["a"], "anger")) > 0.5 and _differ(mixed, lively.mix(faces["a"], "sadness")) > 0.5
    with pytest.raises(UserError, match="needs 7 numbers"):
        lively.mix(faces["a"], [0.5, 0.5])
    with pytest.raises(UserError, match="unknown expression 'happy'; expected one of: anger, disgust"):
        lively.mix(faces["a"], "happy=1")
    with pytest.raises(UserError, match="not a number"):
        lively.mix(faces["a"], "anger=lots")


def test_morph_passes_through_affect_space(lively: FExGAN, faces: dict[str, Path]) -> None:
    frames = lively.morph(faces["a"], ["neutral", "joy"], frames=9)
    assert len(frames) == 9 and all(f.size == (32, 32) for f in frames)
    assert _same(frames[0], lively.transfer(faces["a"], to="neutral"))
    assert _same(frames[-1], lively.transfer(faces["a"], to="joy"))
    assert _same(frames[4], lively.mix(faces["a"], "neutral=0.5,joy=0.5"))   # eased half way
    steps = [_differ(a, b) for a, b in zip(frames, frames[1:])]
    assert max(steps) < _differ(frames[0], frames[-1])    # no jumps: every step smaller than the whole way

    loop = lively.morph(faces["a"], ["neutral", "joy", "surprise"], frames=12, loop=True)
    assert len(loop) == 12
    assert _same(loop[0], frames[0]) and _same(loop[4], frames[-1])
    assert _same(loop[8], lively.transfer(faces["a"], to="surprise"))
    assert _differ(loop[-1], loop[0]) > 0           # the last frame leads into the first, not a copy

    blend = lively.morph_faces(faces["a"], faces["b"], "joy", frames=6, matte="none")
    assert _same(blend[0], lively.transfer(faces["a"], to="joy", matte="none"))
    assert _same(blend[-1], lively.transfer(faces["b"], to="joy", matte="none"))
    mattes = [np.asarray(im.getchannel("A")) for im in lively.morph_faces(faces["a"], faces["b"], "joy", frames=6)]
    ends = [np.asarray(lively.transfer(f, to="joy").getchannel("A")) for f in (faces["a"], faces["b"])]
    assert np.array_equal(mattes[0], ends[0]) and np.abs(mattes[-1].astype(int) - ends[1]).max() <= 16
    assert all(m[(ends[0] == 0) & (ends[1] == 0)].max() == 0 for m in mattes)   # clear in both: clear throughout
    assert all(_same(x, y, 0) for x, y in zip(frames, lively.morph(faces["a"], ["neutral", "joy"], frames=9)))
    for bad in (1, 5000):
        with pytest.raises(UserError, match="frames must be between 2 and"):
            lively.morph(faces["a"], ["joy"], frames=bad)


def test_gif_and_frames(lively: FExGAN, faces: dict[str, Path], tmp_path: Path) -> None:
    frames = lively.morph(faces["a"], ["anger", "surprise"], frames=10)
    path = tmp_path / "m.gif"
    path.write_bytes(animation_bytes(frames, "gif", fps=10))
    gif = Image.open(path)
    assert gif.n_frames == 10 and gif.info["loop"] == 0 and gif.info["duration"] == 100
    pngs = save_frames(frames, tmp_path / "frames")
    assert [p.name for p in pngs] == [f"frame_{i:04d}.png" for i in range(10)]
    assert all(_same(Image.open(p), f, 0) for p, f in zip(pngs, frames))
    with pytest.raises(UserError, match="fps must be between"):
        animation_bytes(frames, "gif", fps=100)


def test_figures_sizes_and_neutral_val_faces(run: Path, model: FExGAN, tmp_path: Path) -> None:
    faces, characters = figures.neutral_faces(run, model)
    split = json.loads((run / "data.json").read_text())
    data = load_source(load_run_config(run).data.source, 32)
    neutral = EXPRESSIONS.index("neutral")
    val_neutral = [data.names.index(n) for n in split["val"] if data.expression[data.names.index(n)] == neutral]
    assert characters == data.identities
    expected = [next(i for i in val_neutral if data.identity[i] == k) for k in range(len(characters))]
    assert torch.equal(faces, to_model_input(data.images[expected]))

    paths = figures.figures(run, tmp_path / "figs", n=5)
    assert [p.name for p in paths] == ["fig4_random_samples.png", "fig5_transfer.png", "fig6_mixed.png"]
    rows = len(characters)
    for path, n_rows, n_cols, top in ((paths[0], 7, 5, LABEL), (paths[1], rows, 8, 2 * LABEL),
                                      (paths[2], rows, 10, 2 * LABEL)):
        w, h = Image.open(path).size
        assert h == top + n_rows * (CELL + PAD) + PAD, path.name
        assert 8 < w - (n_cols * (CELL + PAD) + PAD) < 200, path.name     # room for the row labels


# ----------------------------------------------------------------------------- commands
def test_cli_sample_transfer_mix(run: Path, faces: dict[str, Path], tmp_path: Path) -> None:
    r = _cli("sample", run, "--expression", "all", "--n", 3, "--seed", 2, "--out", tmp_path / "s.png")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "s.png").height == LABEL + 7 * (CELL + PAD) + PAD
    r = _cli("sample", run, "--expression", "joy", "--n", 10, "--out", tmp_path / "joy.png")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "joy.png").size == (8 * (CELL + PAD) + PAD, LABEL + 2 * (CELL + PAD) + PAD)

    folder = faces["a"].parent
    r = _cli("transfer", run, folder / "a.png", folder / "wide.jpg", "--to", "all", "--out", tmp_path / "all")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["a_all.png", "wide_all.png"]
    assert Image.open(tmp_path / "all" / "a_all.png").size == (8 * (CELL + PAD) + PAD, LABEL + CELL + 2 * PAD)
    wide_cell = round(50 * CELL / 30)
    r = _cli("transfer", run, folder, "--to", "joy", "--from", "neutral", "--keep-size", "--out", tmp_path / "joy")
    assert r.returncode == 0, r.stderr
    sizes = {p.name: Image.open(p).size for p in (tmp_path / "joy").iterdir()}
    assert sizes == {"a_joy.png": (48, 48), "b_joy.png": (40, 40), "wide_joy.png": (50, 30)}
    r = _cli("transfer", run, folder / "wide.jpg", "--to", "all", "--keep-size", "--out", tmp_path / "allk")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "allk" / "wide_all.png").width == 8 * (wide_cell + PAD) + PAD

    r = _cli("mix", run, faces["a"], "--affect", "anger=0.5,sadness=0.5", "--affect", "joy", "--out", tmp_path / "mix")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "mix").iterdir()) == ["a_anger0.5+sadness0.5.png", "a_joy.png"]
    r = _cli("mix", run, faces["a"], "--affect", "fear=0.5,surprise=0.5", "--out", tmp_path / "one.png")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "one.png").size == (32, 32)


def test_cli_morph_and_figures(run: Path, faces: dict[str, Path], tmp_path: Path) -> None:
    r = _cli("morph", run, faces["a"], "--from", "neutral", "--via", "surprise", "--to", "joy", "--frames", 7,
             "--loop", "--fps", 10, "--out", tmp_path / "m.gif", "--frames-dir", tmp_path / "frames")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 7
    gif = Image.open(tmp_path / "m.gif")
    assert gif.size == (32, 32) and gif.n_frames == 7 and "(7 frames each, read back)" in r.stderr
    assert _frame_durations(gif) == [100] * 7
    r = _cli("morph", run, faces["a"], "--face-b", faces["b"], "--frames", 4, "--out", tmp_path / "faces.gif")
    assert r.returncode == 0, r.stderr

    r = _cli("figures", run, "--out", tmp_path / "figs")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "fig4_random_samples.png", "fig5_transfer.png", "fig6_mixed.png"]


def _frame_durations(gif: Image.Image) -> list[int]:
    durations = []
    for i in range(gif.n_frames):
        gif.seek(i)
        durations.append(gif.info["duration"])
    return durations


BAD_INPUTS = [
    (["transfer", "{run}", "{a}", "--to", "happy"], "unknown expression 'happy'; expected one of: anger, disgust, fear"),
    (["transfer", "{run}", "{a}", "--to", "joy", "--from", "grumpy"], "unknown expression 'grumpy'"),
    (["transfer", "{run}", "{dir}/missing.png", "--to", "joy"], "does not exist"),
    (["transfer", "{run}", "{text}", "--to", "joy"], "cannot read"),
    (["sample", "{run}", "--n", "0", "--out", "{tmp}/s.png"], "number of samples must be between 1 and"),
    (["sample", "{run}", "--out", "{tmp}/s.txt"], "needs an image suffix"),
    (["sample", "{tmp}/nothing", "--out", "{tmp}/s.png"], "MODEL is a run folder"),
    (["mix", "{run}", "{a}", "--affect", "anger=much", "--out", "{tmp}/m.png"], "is not a number"),
    (["morph", "{run}", "{a}", "--to", "joy", "--frames", "1", "--out", "{tmp}/m.gif"], "frames must be between 2"),
    (["morph", "{run}", "{a}", "--to", "joy", "--out", "{tmp}/m.txt"], "must be an animation file"),
    (["morph", "{run}", "{a}", "--out", "{tmp}/m.gif"], "nothing to morph"),
    (["figures", "{tmp}", "--out", "{tmp}/f"], "is not a run folder"),
]


def _one_error_line(code: int, stderr: str, message: str, tmp_path: Path) -> None:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], stderr
    assert not any(tmp_path.glob("*.png")) and not any(tmp_path.glob("*.gif"))


def test_cli_bad_input_is_one_line_exit_2(run: Path, faces: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bad input through the real entry point `fexgan.cli.main.main` (in this process, to save
    interpreter start-ups), and the first two also as separate `fexgan` processes."""
    from fexgan.cli.main import main

    fill = {"run": run, "a": faces["a"], "text": faces["text"], "dir": faces["a"].parent, "tmp": tmp_path}
    for i, (args, message) in enumerate(BAD_INPUTS):
        argv = [a.format(**fill) for a in args]
        monkeypatch.setattr(sys, "argv", ["fexgan", *argv])
        with pytest.raises(SystemExit) as exit_info:
            main()
        _one_error_line(exit_info.value.code, capsys.readouterr().err, message, tmp_path)
        if i < 2:
            r = _cli(*argv)
            _one_error_line(r.returncode, r.stderr, message, tmp_path)


# ----------------------------------------------------------------------------- precision
def test_inference_is_bf16_only_where_the_device_has_it_and_stays_close_to_fp32(run: Path) -> None:
    from fexgan.devices import bf16_support

    auto, fp32 = fexgan.load(run, "cpu"), fexgan.load(run, "cpu", precision="fp32")
    assert auto.precision == ("bf16" if bf16_support(torch.device("cpu")) else "fp32") and fp32.precision == "fp32"
    bf16 = fexgan.load(run, "cpu", precision="bf16")
    x = bf16.prepare([toon.render_face(c, "neutral", size=32) for c in toon.make_characters(4)])
    a, b = (m.transfer_tensor(x, torch.eye(7), source="neutral") for m in (fp32, bf16))
    assert a.dtype == b.dtype == torch.float32
    diff = ((a + 1) * 127.5 - (b + 1) * 127.5).abs()
    assert 0 < diff.max() and (diff <= 1).float().mean() > 0.95  # bf16 rounds; a few levels at most
    with pytest.raises(UserError, match="precision 'half' is not one of auto, fp32, bf16"):
        fexgan.load(run, "cpu", precision="half")


def test_a_face_unlike_the_training_characters_is_far() -> None:
    """The shipped toon-128 (the paper's design, which redraws every face): its six characters are near,
    six toon characters it never saw and noise far."""
    shipped = fexgan.load("toon-128", "cpu")
    chars = toon.make_characters(12)
    known = shipped.prepare([toon.render_face(c, "neutral", size=128) for c in chars[:6]])
    unseen = shipped.prepare([toon.render_face(c, "neutral", size=128) for c in chars[6:]])
    near, far = shipped.distance_tensor(known, "neutral"), shipped.distance_tensor(unseen, "neutral")
    assert near.shape == far.shape == (6,)
    assert near.max() < inference.FAR < far.min()
    assert shipped.far == inference.FAR  # not calibrated: the default
    assert not shipped.familiarity_tensor(known, "neutral")["far"].any()
    assert shipped.familiarity_tensor(unseen, "neutral")["far"].all()


def other_styles(size: int) -> list[Image.Image]:
    """A smiley (flat yellow disc, dot eyes, a line for a mouth), noise and a grey square."""
    smiley = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(smiley)
    draw.ellipse((40, 40, 216, 216), fill=(255, 220, 0), outline="black", width=6)
    draw.ellipse((90, 100, 110, 125), fill="black")
    draw.ellipse((146, 100, 166, 125), fill="black")
    draw.line((90, 170, 166, 170), fill="black", width=6)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
    return [smiley, noise, Image.new("RGB", (size, size), (128, 128, 128))]


def test_the_edit_design_knows_every_toon_face_and_not_other_styles() -> None:
    """toon-any-64 edits toon faces it never saw as well as its own, so they are near; its classifier
    cannot read its edits of a smiley, of noise or of a grey square: those are far."""
    shipped = fexgan.load("toon-any-64", "cpu")
    chars = toon.make_characters(toon.MAX_CHARACTERS, seed=TOON_SEED)
    held_out = [c for c in chars if c.name in shipped.summary["held_out"]]
    assert len(held_out) == 8
    toons = shipped.prepare([toon.render_face(c, "neutral", size=64) for c in chars[:6] + held_out])
    known = shipped.familiarity_tensor(toons, "neutral")
    assert known["recognised"].min() > inference.RECOGNISED + 0.1 and not known["far"].any()
    assert known["distance"].max() > shipped.far  # the redraw distance would call some of them far
    others = shipped.familiarity_tensor(shipped.prepare(other_styles(64)), "neutral")
    assert others["recognised"].max() < inference.RECOGNISED - 0.1 and others["far"].all()
