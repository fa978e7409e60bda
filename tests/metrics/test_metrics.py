"""Evaluation metrics on tiny toon data, each against a case with a known answer: the judge, the
paper's Table 1, FID and diversity, the renderer's ground truth, and `evaluate` / `fexgan evaluate`."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import JUDGES
from safetensors import safe_open

from fexgan.data.images import to_model_input
from fexgan.data.pairs import split_indices
from fexgan.data.sources import cache_dir, load_source
from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS
from fexgan.files import checkpoint as ckpt
from fexgan.metrics.accuracy import table1_row
from fexgan.metrics.evaluate import evaluate, transfer_metrics
from fexgan.metrics.groundtruth import MAX_PSNR, compare, gradient_energy, render_truth
from fexgan.metrics.judge import FORMAT, get_judge, load_judge
from fexgan.metrics.realism import diversity, frechet_distance
from fexgan.nets.networks import Discriminator, Generator
from fexgan.presets import build_config
from fexgan.training.loop import train

FEXGAN = Path(sys.executable).parent / "fexgan"
SPEC, SIZE = JUDGES["judge"]       # toon:8 at 64 px: 336 faces, 84 held out; the session's judge is theirs
C = len(EXPRESSIONS)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return load_source(SPEC, SIZE)


@pytest.fixture(scope="module")
def run(tmp_path_factory, judge) -> Path:
    """A barely trained tiny model at 64 px on the same data (so it shares the judge)."""
    out = tmp_path_factory.mktemp("run") / "tiny64"
    cfg = build_config("tiny", overrides=[f"data.source={SPEC}", f"model.image_size={SIZE}", "run.steps=20", "run.device=cpu",
                                          "run.threads=1"])
    train(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def report(run, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("eval")
    return evaluate(run, n=24, out=out, device="cpu", log=lambda s: None, sliders=3), out


# ----------------------------------------------------------------------------- the judge
def test_judge_is_accurate_on_held_out_reals_and_cached(data, judge):
    _, val = split_indices(data, 0.2, seed=0)
    expr_p, id_p = judge.predict(to_model_input(data.images[val]))
    expr_acc = float((expr_p.argmax(1) == data.expression[val]).float().mean())
    id_acc = float((id_p.argmax(1) == data.identity[val]).float().mean())
    assert expr_acc >= 0.95 and id_acc >= 0.98, (expr_acc, id_acc)
    assert judge.accuracy["n"] == len(val) and judge.accuracy["split"] == "val"
    assert abs(judge.accuracy["expression"] - expr_acc) < 1e-6    # the recorded number is this one
    assert judge.identities == tuple(data.identities) and judge.classes == EXPRESSIONS
    assert judge.features(data.images[:5]).shape == (5, judge.net.num_features)
    assert torch.allclose(expr_p.sum(1), torch.ones(len(val)), atol=1e-5)

    path = Path(judge.meta["path"])
    assert path.parent == cache_dir() / "judges" and path.suffix == ".safetensors"
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == FORMAT
    again = get_judge(SPEC, SIZE, log=lambda s: pytest.fail(f"retrained: {s}"))   # loaded, not trained
    assert torch.equal(again.predict(data.images[:16])[0], judge.predict(data.images[:16])[0])


def test_a_broken_or_foreign_judge_file_is_refused(tmp_path):
    bad = tmp_path / "judge.safetensors"
    bad.write_bytes(b"not a judge")
    with pytest.raises(UserError, match="not a readable judge"):
        load_judge(bad)
    model = tmp_path / "model.safetensors"      # a safetensors file of another kind
    ckpt.save_model(model, Generator(build_config("tiny").model), None, build_config("tiny").model)
    with pytest.raises(UserError, match="not a fexgan judge"):
        load_judge(model)


# ----------------------------------------------------------------------------- Table 1
def test_table1_matches_a_hand_computation(data):
    torch.manual_seed(3)  # a seeded random discriminator: the hand computation holds for any
    D = Discriminator(build_config("tiny", overrides=[f"model.image_size={SIZE}"]).model)
    real, real_cls = data.images[:6], data.expression[:6]
    fake, fake_cls = data.images[6:10].flip(-1), torch.tensor([0, 3, 3, 6])
    row = table1_row(D, real, real_cls, fake, fake_cls)
    with torch.no_grad():
        rl, rc = D(to_model_input(real))
        fl, fc = D(to_model_input(fake))
    hand = {"real_binary": (rl > 0).float().mean(), "real_multi": (rc.argmax(1) == real_cls).float().mean(),
            "fake_binary": (fl < 0).float().mean(), "fake_multi": (fc.argmax(1) == fake_cls).float().mean()}
    for key, value in hand.items():
        assert row[key]["value"] == pytest.approx(float(value), abs=1e-5)
        assert 0 <= row[key]["value"] <= 1
    assert [row[k]["n"] for k in ("real_binary", "real_multi", "fake_binary", "fake_multi")] == [6, 6, 4, 4]


# ----------------------------------------------------------------------------- FID and diversity
def test_fid_is_zero_for_identical_sets_and_grows_with_difference(data, judge):
    train_idx, val_idx = split_indices(data, 0.2, seed=0)
    real, other = data.images[val_idx], data.images[train_idx[:len(val_idx)]]
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    same, floor, far = (frechet_distance(judge, real, x) for x in (real, other, noise))
    assert same < 1e-3 * floor
    assert far > 4 * floor
    assert diversity(judge, real[:1].expand(8, -1, -1, -1), torch.zeros(8, dtype=torch.long)) == pytest.approx(0, abs=1e-4)
    assert diversity(judge, real, data.expression[val_idx]) > 0


# ----------------------------------------------------------------------------- ground truth
def test_ground_truth_of_the_source_expression_is_the_dataset_image_itself(data):
    idx = torch.tensor([0, 9, 100, len(data) - 1])
    own = render_truth(data, SPEC, idx, F.one_hot(data.expression[idx], C).float())
    assert torch.equal(own, data.images[idx])            # same character, variation and compositing
    other = render_truth(data, SPEC, idx, F.one_hot((data.expression[idx] + 1) % C, C).float())
    assert not torch.equal(other, data.images[idx])
    m = compare(own, data.images[idx])
    assert m["l1"].abs().max() == 0 and torch.all(m["psnr"] == MAX_PSNR) and torch.allclose(m["ssim"], torch.ones(4))
    assert torch.all(compare(other, data.images[idx])["psnr"] < MAX_PSNR)


def test_a_constant_offset_scores_its_known_l1_psnr_and_full_sharpness():
    """truth + c (no clipping): L1 = c / 127.5 on [-1, 1] pixels, PSNR = 20 log10(255 / c), SSIM < 1, and the
    edges are untouched (sharpness 1). A box blur keeps most of the PSNR but loses sharpness."""
    truth = torch.randint(0, 200, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for c in (1, 10, 40):
        m = compare(truth + c, truth)
        torch.testing.assert_close(m["l1"], torch.full((6,), c / 127.5))
        torch.testing.assert_close(m["psnr"], torch.full((6,), 20 * math.log10(255 / c)))
        torch.testing.assert_close(m["sharpness"], torch.ones(6))
        assert torch.all(m["ssim"] < 1)
    smooth = torch.nn.functional.avg_pool2d(truth.float(), 3, 1, 1).round().to(torch.uint8)
    assert torch.all(compare(smooth, truth)["sharpness"] < 0.7)
    assert torch.all(compare(truth, truth)["psnr"] == MAX_PSNR)


def test_transfer_metrics_on_hand_made_predictions():
    """Three classes, six transfers: the accuracies, per-target and per-character figures and both
    matrices, counted by hand (stats are rounded to 5 decimals). The data is chosen so that no figure
    equals its complement's (a mask turned around must show) and the matrices are not symmetric."""
    classes = ("a", "b", "c")
    source, target = torch.tensor([0, 0, 1, 2, 2, 1]), torch.tensor([1, 2, 0, 0, 2, 0])
    predicted, kept = torch.tensor([1, 0, 0, 1, 2, 0]), torch.tensor([True, True, False, False, True, True])
    character = torch.tensor([0, 0, 1, 1, 1, 1])
    m = transfer_metrics(classes, source, target, predicted, kept, character, ["x", "y"])
    approx = lambda v: pytest.approx(v, abs=1e-5)
    assert m["expression_accuracy"] == {"value": approx(4 / 6), "n": 6}
    assert m["identity_preservation"] == {"value": approx(4 / 6), "n": 6}
    assert m["per_target"]["a"]["expression_accuracy"] == {"value": approx(2 / 3), "n": 3}
    assert m["per_target"]["b"]["expression_accuracy"]["value"] == approx(1.0)
    assert m["per_target"]["c"]["expression_accuracy"] == {"value": approx(0.5), "n": 2}
    assert m["per_target"]["a"]["identity_preservation"]["value"] == approx(1 / 3)
    assert m["per_character"]["x"]["expression_accuracy"] == {"value": approx(0.5), "n": 2}
    assert m["per_character"]["y"]["expression_accuracy"] == {"value": approx(0.75), "n": 4}
    assert m["per_character"]["x"]["identity_preservation"]["value"] == approx(1.0)
    assert m["per_character"]["y"]["identity_preservation"]["value"] == approx(0.5)
    assert m["count_source_x_target"] == [[0, 1, 1], [2, 0, 0], [1, 0, 1]]
    nan = float("nan")
    got = torch.tensor(m["accuracy_source_x_target"])
    want = torch.tensor([[nan, 1.0, 0.0], [1.0, nan, nan], [0.0, nan, 1.0]])
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())
    assert m["count_target_x_predicted"] == [[2, 1, 0], [0, 1, 0], [1, 0, 1]]  # not symmetric: rows are targets
    # a class nobody was sent to still has its row and column
    wide = transfer_metrics(("a", "b", "c", "d"), source, target, predicted, kept)
    assert len(wide["count_source_x_target"]) == 4 and wide["count_target_x_predicted"][3] == [0, 0, 0, 0]


def test_gradient_energy_of_known_patterns():
    """Vertical stripes of 0 and 1: every horizontal step is 1, no vertical one: energy (1 + 0) / 2;
    horizontal stripes the other way round; a flat image: 0; each image of a batch on its own."""
    stripes = (torch.arange(8) % 2).float().expand(1, 3, 8, 8)
    flat = torch.full((1, 3, 8, 8), 0.3)
    energy = gradient_energy(torch.cat([stripes, stripes.transpose(-1, -2), flat]))
    torch.testing.assert_close(energy, torch.tensor([0.5, 0.5, 0.0]))


def test_true_transfers_score_like_real_images(data, judge):
    """The known answer for a perfect generator: its outputs (the renderer's truth) are judged as
    well as real images are, and are as close to the real distribution as real images."""
    _, val_idx = split_indices(data, 0.2, seed=0)
    targets = torch.arange(len(val_idx)) % C
    perfect = render_truth(data, SPEC, val_idx, F.one_hot(targets, C).float())
    expr_p, id_p = judge.predict(perfect)
    assert float((expr_p.argmax(1) == targets).float().mean()) >= judge.accuracy["expression"] - 0.1
    assert float((id_p.argmax(1) == data.identity[val_idx]).float().mean()) >= 0.95
    train_idx, _ = split_indices(data, 0.2, seed=0)
    floor = frechet_distance(judge, data.images[val_idx], data.images[train_idx[:len(val_idx)]])
    assert frechet_distance(judge, data.images[val_idx], perfect) < 3 * floor


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_writes_metrics_report_and_figures(report):
    r, out = report
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n"] == 24 and saved["split"] == "val" and saved["data"] == SPEC
    n_src = min(24, saved["split_sizes"]["val"])
    t = saved["transfer"]
    assert t["expression_accuracy"]["n"] == n_src * C and t["identity_preservation"]["n"] == n_src * C
    assert sum(map(sum, t["count_source_x_target"])) == n_src * C
    assert all(t["per_target"][e]["expression_accuracy"]["n"] == n_src for e in EXPRESSIONS)
    per_character = t["per_character"]  # every judged transfer belongs to one source character
    assert sum(m["expression_accuracy"]["n"] for m in per_character.values()) == n_src * C
    assert sum(m["expression_accuracy"]["value"] * m["expression_accuracy"]["n"]
               for m in per_character.values()) == pytest.approx(t["expression_accuracy"]["value"] * n_src * C, abs=0.01)
    for split in ("train", "val"):
        for cell in saved["table1"][split].values():
            assert 0 <= cell["value"] <= 1 and cell["n"] == 24
    assert set(saved["mixed"]) == {"anger+sadness", "joy+disgust", "fear+surprise"}
    for m in saved["mixed"].values():
        assert 0 <= m["p_first"]["value"] + m["p_second"]["value"] <= 1 + 1e-6 and m["p_first"]["n"] == n_src
    assert saved["realism"]["fid_transfer"]["value"] >= 0 and saved["realism"]["fid_transfer"]["n"] == n_src
    truth = saved["judge_truth"]  # the same transfers' true targets, judged: what a perfect generator scores
    assert truth["expression_accuracy"]["n"] == n_src * C and set(truth["per_character"]) == set(per_character)
    assert truth["expression_accuracy"]["value"] > t["expression_accuracy"]["value"]
    g = saved["groundtruth"]
    assert g["all changes"]["generated"]["l1"]["n"] == n_src * (C - 1)
    assert g["same expression"]["generated"]["l1"]["n"] == n_src
    text = (out / "report.md").read_text()
    for needle in ("Table 1", "0.913", "(n=", "source character", "judge on the truth", "confusion.png", "transfers.png", "Ground truth", "joy+disgust"):
        assert needle in text
    for png in ("confusion.png", "transfers.png", "samples.png", "sliders.png"):
        assert (out / png).stat().st_size > 1000 and (out / png).read_bytes()[:4] == b"\x89PNG"
    sliders = saved["sliders"]
    assert sliders["sources"] == 3 and set(sliders["intensity"]["per_t"]) == {"0.25", "0.5", "0.75", "1.0"}
    assert set(sliders["intensity"]["per_expression"]) == set(EXPRESSIONS) - {"neutral"}
    assert len(sliders["mixes"]["per_pair"]) == 15
    assert set(sliders["morph"]["per_expression"]) == set(EXPRESSIONS) - {"neutral"}
    numbers = [v for row in sliders["intensity"]["per_t"].values() for part in ("generated", "copy")
               for v in (m["value"] for m in row[part].values())]
    numbers += [m[k] for m in sliders["morph"]["per_expression"].values() for k in ("max_drop", "max_third")]
    assert all(math.isfinite(v) for v in numbers) and sliders["intensity"]["per_t"]["0.5"]["gain"]["n"] == 3 * 6
    assert "## Sliders" in text and "sliders.png" in text and "50/50 mixes, all pairs" in text


def test_an_untrained_generator_scores_near_chance(tmp_path, data, judge):
    """A generator-only model file with random weights: no Table 1, and the judge finds about one
    expression in seven (the noise lands in one class or another)."""
    cfg = build_config("tiny", overrides=[f"model.image_size={SIZE}"]).model
    torch.manual_seed(0)
    ckpt.save_model(tmp_path / "noise.safetensors", Generator(cfg), None, cfg)
    with pytest.raises(UserError, match="--data"):
        evaluate(tmp_path / "noise.safetensors", out=tmp_path / "e", device="cpu")
    r = evaluate(tmp_path / "noise.safetensors", data=SPEC, n=24, out=tmp_path / "e", device="cpu", log=lambda s: None,
                 sliders=2)
    assert r["table1"] == {}
    assert 0.5 / C <= r["transfer"]["expression_accuracy"]["value"] <= 2 / C  # near chance, from both sides
    assert r["realism"]["fid_transfer"]["value"] > 2 * r["realism"]["fid_real_reference"]["value"]
    gains = [row["gain"]["value"] for row in r["sliders"]["intensity"]["per_t"].values()]
    assert all(g < -3 for g in gains), gains   # noise is far from any face
    assert "real, binary" in (tmp_path / "e" / "report.md").read_text()


@pytest.mark.parametrize("kwargs, message", [({"split": "test"}, "split 'test'"), ({"n": 1}, "--n must be"),
                                             ({"data": "nope:x"}, "unknown data source"),
                                             ({"sliders": -1}, "--sliders must be")])
def test_bad_arguments_are_user_errors(run, tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        evaluate(run, out=tmp_path, device="cpu", **kwargs)


def test_cli_prints_headline_and_report_path(run, tmp_path):
    out = tmp_path / "cli"
    done = subprocess.run([str(FEXGAN), "evaluate", str(run), "--n", "8", "--split", "train", "--out", str(out),
                           "--device", "cpu", "--sliders", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Table 1 val:" in done.stdout and "judge expression accuracy" in done.stdout
    assert f"report: {out / 'report.md'}" in done.stdout
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["split"] == "train" and "sliders=0" in saved["sliders"]["skipped"] and not (out / "sliders.png").exists()
    bad = subprocess.run([str(FEXGAN), "evaluate", str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr


def test_ship_model_script_exports_evaluates_and_writes_a_card(run, tmp_path):
    """scripts/ship_model.py (what `make pretrained` runs after training) on a real run folder."""
    script = Path(__file__).parents[2] / "scripts" / "ship_model.py"
    done = subprocess.run([sys.executable, str(script), str(run), "--name", "mini", "--preset", "tiny",
                           "--command", "fexgan train ...", "--dest", str(tmp_path / "shipped")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    weights, card = tmp_path / "shipped" / "mini.safetensors", json.loads((tmp_path / "shipped" / "mini.json").read_text())
    loaded = ckpt.load_model(weights)
    with safe_open(str(weights), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    assert loaded.discriminator is not None and card["config"] == json.loads((run / "config.json").read_text())
    m = card["evaluation"]["metrics"]
    assert m["expression_accuracy"]["n"] == 84 * C and 0 <= m["expression_accuracy"]["value"] <= 1
    assert set(card["evaluation"]["per_character"]) == set(load_source(SPEC, SIZE).identities)
    assert card["weights"]["fp16_vs_fp32"]["transfers"] == 84 * C
    assert card["training"]["steps"] == 20 and f"{m['expression_accuracy']['value']:.3f}" in card["limitations"][0]
