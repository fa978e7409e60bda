"""The sliders of `fexgan evaluate` (fexgan.metrics.sliders) against generators and a judge whose answers
are known: a generator that hands back its input gains exactly 0 dB over the copy; one that paints the
affect it is asked for, read back by a judge, draws a straight morph; one that shows a third expression
half-way is caught."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from fexgan.presets import build_config
from fexgan.data.sources import load_source
from fexgan.expressions import EXPRESSIONS
from fexgan.metrics.generated import transfer, transfer_each
from fexgan.metrics.report import _sliders, slider_headline
from fexgan.metrics.sliders import (
    FRAMES,
    INTENSITIES,
    frame_t,
    morph_curves,
    plot_sliders,
    slider_metrics,
    slider_sources,
)

SPEC, SIZE = "toon:4", 32
N_SRC = 2                    # neutral sources: each is 100 transfers and as many renderings of the truth
C, NEUTRAL, JOY, SAD = len(EXPRESSIONS), EXPRESSIONS.index("neutral"), EXPRESSIONS.index("joy"), EXPRESSIONS.index("sadness")
TARGETS = [e for e in EXPRESSIONS if e != "neutral"]

pytestmark = pytest.mark.usefixtures("one_thread")


class Painter(torch.nn.Module):
    """A stand-in generator (encode, decode) on the one inference path: `mode` "copy" hands back the
    source; "paint" draws the target affect as C vertical stripes (stripe k at brightness affect[k]);
    "detour" paints sadness instead wherever the affect is a mix of neutral and another expression
    with 0.3 < t < 0.7."""

    def __init__(self, mode: str):
        super().__init__()
        self.cfg = SimpleNamespace(num_classes=C)
        self.mode = mode
        self.anchor = torch.nn.Parameter(torch.zeros(1))   # gives the driver a device

    def encode(self, x: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flatten(1), torch.zeros(len(x), 1)       # the latent mean: the image itself

    def decode(self, z: torch.Tensor, target: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        x = z.view_as(source)
        if self.mode == "copy":
            return x
        affect = target.clone()
        if self.mode == "detour":
            t = 1 - affect[:, NEUTRAL]
            halfway = (t > 0.3) & (t < 0.7) & (affect > 0).sum(1).eq(2) & (affect[:, NEUTRAL] > 0)
            affect[halfway] = torch.nn.functional.one_hot(torch.tensor(SAD), C).float()
        stripes = affect.repeat_interleave(-(-x.shape[-1] // C), dim=1)[:, :x.shape[-1]]
        return (stripes[:, None, None, :] * 2 - 1).expand_as(x).contiguous()


class StripeJudge:
    """Reads the stripes back: the expression probabilities are the stripes' brightness, normalised."""

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        width = -(-images.shape[-1] // C)
        means = torch.stack([images[..., k * width:(k + 1) * width].float().mean((1, 2, 3)) for k in range(C)], 1) / 255
        p = means / means.sum(1, keepdim=True).clamp(min=1e-6)
        return p, torch.ones(len(images), 1)


@pytest.fixture(scope="module")
def data():
    return load_source(SPEC, SIZE)


@pytest.fixture(scope="module")
def sources(data):
    return slider_sources(data, torch.arange(len(data)), N_SRC, seed=0)


@pytest.fixture(scope="module")
def painted(data, sources):
    return slider_metrics(Painter("paint"), StripeJudge(), data, sources, SPEC, (255, 255, 255))


@pytest.fixture(scope="module")
def detoured(data, sources):
    return slider_metrics(Painter("detour"), StripeJudge(), data, sources, None, (255, 255, 255))


def test_sources_are_seeded_neutral_faces_or_a_reason(data, sources):
    assert len(sources) == N_SRC and bool((data.expression[sources] == NEUTRAL).all())
    assert torch.equal(slider_sources(data, torch.arange(len(data)), N_SRC, seed=0), sources)
    assert not torch.equal(slider_sources(data, torch.arange(len(data)), N_SRC, seed=1), sources)
    assert "sliders=0" in slider_sources(data, torch.arange(len(data)), 0, seed=0)
    no_neutral = torch.nonzero(data.expression != NEUTRAL).squeeze(1)
    assert "no neutral" in slider_sources(data, no_neutral, 3, seed=0)
    assert slider_metrics(Painter("copy"), StripeJudge(), data, "why not", SPEC, (255, 255, 255)) == {"skipped": "why not"}


def test_a_generator_that_returns_its_input_gains_exactly_nothing(data, sources):
    s = slider_metrics(Painter("copy"), StripeJudge(), data, sources, SPEC, (255, 255, 255))
    rows = [*s["intensity"]["per_t"].values(), *(r for e in s["intensity"]["per_expression"].values() for r in e.values()),
            s["mixes"]["all"], s["mixes"]["paper"], *s["mixes"]["per_pair"].values()]
    for row in rows:
        assert row["gain"]["value"] == 0.0 and row["generated"] == row["copy"]
    assert s["intensity"]["per_t"]["0.5"]["gain"]["n"] == N_SRC * len(TARGETS)
    assert len(s["mixes"]["per_pair"]) == len(TARGETS) * (len(TARGETS) - 1) // 2
    assert s["mixes"]["paper_pairs"] == ["anger+sadness", "joy+disgust", "fear+surprise"]
    assert s["mixes"]["paper"]["gain"]["n"] == N_SRC * 3 and s["mixes"]["all"]["gain"]["n"] == N_SRC * 15
    # the truth is drawn at each intensity: the further from neutral, the further the copy is from it
    for e, by_t in s["intensity"]["per_expression"].items():
        copy = [by_t[str(t)]["copy"]["psnr"]["value"] for t in INTENSITIES]
        assert copy == sorted(copy, reverse=True) and len(set(copy)) == len(copy), (e, copy)
    # the neutral face judged the same in every frame: no fall, nothing third
    assert s["morph"]["overall"]["max_drop"] == 0.0


def test_a_painted_affect_draws_a_straight_morph(data, sources, painted):
    s = painted
    assert s["frames"] == FRAMES and s["frame_t"][0] == 0 and s["frame_t"][-1] == 1
    for e, m in s["morph"]["per_expression"].items():
        assert m["p_target"] == pytest.approx(frame_t(), abs=0.01), e     # the judge reads the weight asked for
        assert m["max_drop"] == 0 and m["max_third"] < 0.01 and m["straight"] == {"value": 1.0, "n": N_SRC}
    on_source = StripeJudge().predict(data.images[sources])[0].mean(0)
    for e, m in s["truth_morph"]["per_expression"].items():   # the renderer's true morph starts at the source itself
        assert len(m["p_target"]) == FRAMES and m["p_target"][0] == pytest.approx(float(on_source[EXPRESSIONS.index(e)]), abs=1e-4)
    assert s["intensity"]["per_t"]["1.0"]["gain"]["value"] < 0            # stripes are no face
    json.dumps(s, allow_nan=False)


def test_a_morph_through_a_third_expression_is_caught(detoured):
    s = detoured
    assert s["intensity"] is None and s["mixes"] is None and s["truth_morph"] is None and "ground truth" in s["note"]
    joy, sad = s["morph"]["per_expression"]["joy"], s["morph"]["per_expression"]["sadness"]
    assert joy["max_third"] == pytest.approx(1, abs=0.01) and joy["third_at_peak"] == "sadness"
    halfway = [k for k, t in enumerate(frame_t()) if 0.3 < t < 0.7]
    assert joy["max_drop"] == pytest.approx(frame_t()[halfway[0] - 1], abs=0.01)   # from the frame before to 0
    assert joy["straight"]["value"] == 0
    assert sad["max_third"] < 0.01                               # the detour is sadness itself: no third there,
    assert sad["max_drop"] == pytest.approx(1 - frame_t()[halfway[-1] + 1], abs=0.01)   # but it overshoots
    assert s["morph"]["overall"]["straight"] == {"value": 0.0, "n": N_SRC * len(TARGETS)}   # sadness overshoots too


@pytest.mark.parametrize("design", ["paper", "edit"])
def test_each_source_encoded_once_draws_what_transfer_draws(data, design):
    """`transfer_each` (what the sliders draw with) against `transfer` of the repeated sources, on a
    seeded random generator of either design (the edit design's decoder also sees the source)."""
    from fexgan.nets.designs import build_generator

    torch.manual_seed(0)
    G = build_generator(build_config("tiny", overrides=[f"model.generator={design}"]).model)
    with torch.no_grad():          # weights far from their small initial ones, so that every input shows
        for w in G.parameters():
            w.normal_(0, 0.3)
    images, cls = data.images[:3], data.expression[:3]
    affects = torch.tensor([[0.0] * C, [0.5] * 2 + [0.0] * (C - 2), [1.0] + [0.0] * (C - 1)])
    each = transfer_each(G, images, cls, affects)
    one_by_one = transfer(G, images.repeat_interleave(3, 0), cls.repeat_interleave(3), affects.repeat(3, 1))
    assert each.shape == (9, 3, SIZE, SIZE) and (each.int() - one_by_one.int()).abs().max() <= 1
    assert not torch.equal(each[0], each[1]) and not torch.equal(each[0], each[3])   # affect and source both count


def test_morph_curves_by_hand():
    """Two sources, one morph (neutral -> joy) of three frames; classes: neutral, joy, sadness, fear."""
    classes = ("neutral", "joy", "sadness", "fear")
    p = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.2, 0.5, 0.3, 0.0], [0.0, 1.0, 0.0, 0.0]],
                      [[1.0, 0.0, 0.0, 0.0], [0.0, 0.9, 0.0, 0.1], [0.0, 0.7, 0.0, 0.3]]])
    m = morph_curves(p, {"joy": [0, 1, 2]}, classes)["per_expression"]["joy"]
    assert m["p_target"] == pytest.approx([0.0, 0.7, 0.85]) and m["p_third"] == pytest.approx([0.0, 0.2, 0.15])
    assert m["max_drop"] == 0 and m["max_third"] == pytest.approx(0.2) and m["third_at_peak"] == "sadness"
    assert m["straight"] == {"value": 0.0, "n": 2}    # source 0 reads sadness 0.3, source 1 falls by 0.2
    p[1, 2] = torch.tensor([0.0, 0.9, 0.0, 0.1])
    m = morph_curves(p, {"joy": [0, 1, 2]}, classes)["per_expression"]["joy"]
    assert m["straight"] == {"value": 0.5, "n": 2}


@pytest.mark.parametrize("truth", [True, False])
def test_the_plot_is_a_png(painted, detoured, tmp_path, truth):
    s = painted if truth else detoured
    plot_sliders(s, tmp_path / "sliders.png")
    head = (tmp_path / "sliders.png").read_bytes()
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) > 20000
    values = [v for e in s["morph"]["per_expression"].values() for v in e["p_target"] + e["p_third"]]
    assert all(math.isfinite(v) for v in values)


def test_the_report_says_what_needs_ground_truth(painted, detoured):
    with_truth = "\n".join(_sliders({"sliders": painted, "split": "val"}))
    assert "| **mean** |" in with_truth and "50/50 mixes, all pairs" in with_truth and "sliders.png" in with_truth
    judged_only = "\n".join(_sliders({"sliders": detoured, "split": "val"}))
    assert "need ground truth" in judged_only and "| **mean** |" not in judged_only and "neutral -> joy" in judged_only
    assert "need ground truth" in slider_headline(detoured) and "t = 0.25 / 0.5 / 0.75 / 1:" in slider_headline(painted)
    assert _sliders({"sliders": {"skipped": "not measured (sliders=0)"}, "split": "val"})[-2] == "Sliders not measured (sliders=0)."
