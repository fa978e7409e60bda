"""Expressions as points in a space of facial action controls; affect vectors -> controls."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np

from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS, parse_affect

Affect = Union[str, int, Mapping[str, float], Sequence[float], np.ndarray]

CONTROLS: tuple[str, ...] = (
    "brow_inner_up", "brow_outer_up", "brow_lower", "brow_knit",
    "lid_raise", "lid_tighten", "lid_droop", "cheek_raise", "nose_wrinkle",
    "upper_lip_raise", "sneer", "corner_up", "corner_down",
    "mouth_open", "lip_stretch", "lip_round", "teeth",
)
"""Facial action controls; about 0..1 each (``sneer`` is the one-sided upper-lip raise)."""

EXPRESSION_CONTROLS: dict[str, dict[str, float]] = {
    "anger": {"brow_lower": 1.0, "brow_knit": 0.8, "lid_tighten": 0.55, "lid_raise": 0.25,
              "nose_wrinkle": 0.3, "mouth_open": 0.5, "lip_stretch": 0.8, "corner_down": 0.35,
              "teeth": 1.0},
    "disgust": {"nose_wrinkle": 1.0, "upper_lip_raise": 1.0, "sneer": 1.0, "corner_down": 0.6,
                "brow_lower": 0.6, "brow_knit": 0.3, "lid_tighten": 0.5, "mouth_open": 0.1,
                "teeth": 0.7},
    "fear": {"brow_inner_up": 1.0, "brow_outer_up": 0.5, "brow_knit": 0.8, "lid_raise": 1.0,
             "mouth_open": 0.65, "lip_stretch": 1.0, "corner_down": 0.4, "teeth": 0.6},
    "joy": {"cheek_raise": 1.0, "corner_up": 1.0, "mouth_open": 0.55, "teeth": 1.0,
            "brow_outer_up": 0.2, "brow_inner_up": 0.1},
    "neutral": {},
    "sadness": {"brow_inner_up": 1.0, "brow_outer_up": -0.5, "brow_knit": 0.4, "lid_droop": 0.8,
                "corner_down": 1.0},
    "surprise": {"brow_inner_up": 1.0, "brow_outer_up": 1.0, "lid_raise": 1.0, "mouth_open": 1.0,
                 "lip_round": 1.0},
}
"""Each expression as a point in control space (controls not listed are 0)."""

_POINTS = np.array([[EXPRESSION_CONTROLS[e].get(c, 0.0) for c in CONTROLS] for e in EXPRESSIONS])


def _as_affect(affect: Affect) -> np.ndarray:
    """Any accepted affect form as a float64 vector of length 7."""
    if isinstance(affect, str):
        vec = parse_affect(affect).numpy()
    elif isinstance(affect, (int, np.integer)):
        if not 0 <= int(affect) < len(EXPRESSIONS):
            raise UserError(f"expression index {affect} is out of range 0..{len(EXPRESSIONS) - 1}")
        vec = np.eye(len(EXPRESSIONS))[int(affect)]
    elif isinstance(affect, Mapping):
        vec = parse_affect(",".join(f"{k}={float(v)}" for k, v in affect.items())).numpy()
    else:
        vec = np.asarray(affect, dtype=np.float64).reshape(-1)
    vec = np.asarray(vec, dtype=np.float64)
    if vec.shape != (len(EXPRESSIONS),) or not np.all(np.isfinite(vec)):
        raise UserError(f"an affect vector needs {len(EXPRESSIONS)} finite weights "
                        f"({', '.join(EXPRESSIONS)}), got {vec.tolist()}")
    return vec


def affect_to_controls(affect: Affect) -> dict[str, float]:
    """Blend the expressions' control points by the affect weights (a linear map; neutral = 0).

    ``affect`` may be 7 weights in ``EXPRESSIONS`` order, an expression name or index, a mapping
    like ``{"anger": 0.5, "sadness": 0.5}`` or a string like ``"anger=0.5,sadness=0.5"``.
    """
    return {c: float(x) for c, x in zip(CONTROLS, _as_affect(affect) @ _POINTS)}
