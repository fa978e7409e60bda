"""Within-class variation of one image (intensity, gaze, blinks; pose and lighting on request)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Variation:
    """Within-class variation of one image; ``Variation()`` is the canonical, unjittered face."""

    intensity: float = 1.0     # scales the expression's controls
    dx: float = 0.0            # head shift, fraction of the image width
    dy: float = 0.0
    scale: float = 1.0
    angle: float = 0.0         # in-plane head rotation, degrees (positive: counter-clockwise)
    gaze_x: float = 0.0        # -1 (left) .. 1 (right)
    gaze_y: float = 0.0        # -1 (up) .. 1 (down)
    blink: float = 0.0         # 0 open .. 1 closed
    light: float = 0.0         # overall brightness, -1 .. 1
    shade: float = 0.0         # strength of a directional shading gradient, 0 .. 1
    shade_angle: float = 0.0   # direction the light comes from, degrees


def sample_variation(rng: np.random.Generator, jitter: bool = False) -> Variation:
    """Draw a random within-class variation (values rounded to 4 decimals, so a manifest's
    numbers reproduce the image exactly).

    By default, as in FERG-DB, the camera and the lighting are fixed: an image differs from the
    others of its character and expression only by the expression's intensity, the gaze and the
    blinks, so any two images of one character are aligned. ``jitter=True`` adds the head's shift,
    zoom and +-10 degree rotation and random lighting (for robustness studies); the intensity, gaze
    and blinks are the same draws either way.
    """
    r = rng.uniform(size=12)
    blink = 0.25 + 0.5 * r[7] if r[8] < 0.1 else 0.0  # a half blink in one image of ten
    intensity, gaze_x, gaze_y = 0.65 + 0.4 * r[0], 2 * r[5] - 1, 1.2 * r[6] - 0.6
    if jitter:
        pose = (0.05 * r[1] - 0.025, 0.05 * r[2] - 0.025, 0.93 + 0.1 * r[3], 20 * r[4] - 10)
        light = (2 * r[9] - 1, r[10], 360 * r[11])
    else:
        pose, light = (0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 0.0)
    values = (intensity, *pose, gaze_x, gaze_y, blink, *light)
    return Variation(*(round(float(v), 4) for v in values))


def variation_for(seed: int, char_idx: int, expr_idx: int, n: int, jitter: bool = False) -> Variation:
    """The variation of dataset image ``n`` (1-based, as in its file name) of one character and
    expression; each image has its own generator, so rendering order does not matter."""
    return sample_variation(np.random.default_rng([seed, char_idx, expr_idx, n]), jitter)
