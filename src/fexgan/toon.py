"""Toon faces: a built-in, FERG-like procedural cartoon-face dataset with ground truth.

Every face is drawn from polygons: the geometry is built in "face units" (the head spans about
-0.8..0.8, y points down), moved by one affine (the head's shift, scale and in-plane rotation),
filled with Pillow at 2-4x the output size and reduced, which anti-aliases it. The background is
transparent, as in FERG-DB.

Expressions are points in a small space of facial action controls (brow raise, lid tighten,
lip corners up, ...). Any 7-dim affect vector maps to controls by a weighted sum of those points
(neutral is the origin), so a mixed expression has a ground-truth rendering too.

Each dataset image is seeded on its own, ``np.random.default_rng([seed, char, expr, n])``, so the
same arguments give byte-identical images on every run, in any order and in any worker process.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageDraw

from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS, parse_affect

RGB = tuple[int, int, int]
Affect = Union[str, int, Mapping[str, float], Sequence[float], np.ndarray]

RENDERER_VERSION = 3
"""Bumped whenever the same arguments would render different pixels (data caches key on it).
Version 3: a fixed camera and fixed lighting by default (pose and lighting jitter only on request)."""

MIN_SIZE, MAX_SIZE, MAX_CHARACTERS = 32, 256, 64
_HALF = 1.12  # the image spans [-_HALF, _HALF] face units on both axes
_EYE_Y, _NOSE_Y, _MOUTH_Y = 0.06, 0.31, 0.53
_INK = (48, 30, 30)

# ----------------------------------------------------------------------------- expressions

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


# ----------------------------------------------------------------------------- characters

@dataclass(frozen=True)
class Character:
    """The style of one identity; lengths are in face units (the head is about 1.6 tall)."""

    name: str
    skin: RGB
    hair: RGB
    iris: RGB
    shirt: RGB
    head_w: float = 0.70          # half width of the head
    head_top: float = 0.80        # crown height above the centre
    head_bottom: float = 0.82     # chin depth below the centre
    jaw: float = 0.25             # chin taper: 0 round/square .. 0.6 pointed
    square: float = 2.0           # head outline exponent: 2 ellipse .. 3 boxy
    ears: str = "round"           # round | pointy | none
    hair_back: str = "none"       # none | bob | long | afro | bun
    hair_front: str = "short"     # bald | short | bangs | swept | spiky | curly
    eye_size: float = 1.0
    eye_round: float = 0.9        # eye height / width
    eye_shape: float = 0.5        # lid profile exponent: 0.5 round .. 0.9 almond
    eye_gap: float = 1.0
    eye_tilt: float = 0.0         # outer corners up (>0) or down (<0)
    lashes: bool = False
    brow_thick: float = 1.0
    brow_arch: float = 0.03
    brow: RGB | None = None       # None: a darker shade of the hair
    nose: str = "button"          # button | round | line | wide | pointy
    nose_size: float = 1.0
    mouth_width: float = 1.0
    lips: RGB | None = None
    blush: float = 0.0
    freckles: bool = False
    glasses: str = "none"         # none | round | square
    glasses_color: RGB = (40, 40, 48)
    beard: str = "none"           # none | full | goatee
    mustache: bool = False
    earrings: RGB | None = None


_DEFAULTS: tuple[Character, ...] = (
    Character("ada", skin=(255, 214, 186), hair=(92, 54, 34), iris=(58, 150, 86),
              shirt=(40, 160, 160), head_w=0.66, head_top=0.80, head_bottom=0.84, jaw=0.32,
              ears="none", hair_back="long", hair_front="swept", eye_size=1.05, eye_round=0.85,
              eye_shape=0.75, eye_tilt=0.15, lashes=True, brow_thick=0.8, nose="button",
              nose_size=0.8, lips=(220, 90, 110), blush=0.45),
    Character("bo", skin=(132, 84, 56), hair=(28, 24, 26), iris=(96, 56, 28),
              shirt=(242, 150, 36), head_w=0.74, head_top=0.78, head_bottom=0.80, jaw=0.12,
              square=2.4, hair_back="afro", hair_front="curly", eye_size=0.95, eye_round=1.0,
              brow_thick=1.35, brow_arch=0.01, nose="wide", nose_size=1.15, mouth_width=1.1,
              earrings=(250, 200, 60)),
    Character("cleo", skin=(252, 228, 214), hair=(214, 100, 36), iris=(54, 116, 214),
              shirt=(150, 80, 190), head_w=0.70, head_top=0.80, head_bottom=0.78, jaw=0.38,
              ears="none", hair_back="bob", hair_front="bangs", eye_size=1.15, eye_round=1.0, eye_gap=1.02,
              brow_thick=0.8, brow_arch=0.05, nose="button", nose_size=0.7,
              mouth_width=0.9, blush=0.3, freckles=True),
    Character("dex", skin=(226, 172, 120), hair=(244, 204, 78), iris=(108, 128, 150),
              shirt=(206, 52, 52), head_w=0.72, head_top=0.76, head_bottom=0.82, jaw=0.06,
              square=3.0, ears="round", hair_front="spiky", eye_size=0.9, eye_round=0.8,
              eye_shape=0.6, brow_thick=1.1, brow_arch=0.0, nose="pointy", nose_size=1.0,
              brow=(130, 86, 30), glasses="square"),
    Character("fig", skin=(196, 150, 106), hair=(152, 68, 38), iris=(90, 110, 60),
              shirt=(70, 150, 70), head_w=0.64, head_top=0.86, head_bottom=0.86, jaw=0.2,
              square=2.2, hair_front="bald", eye_size=0.85, eye_round=0.95, eye_gap=0.95,
              brow_thick=1.5, brow_arch=0.02, nose="round", nose_size=1.2, mouth_width=1.0,
              beard="full", mustache=True),
    Character("juno", skin=(238, 204, 196), hair=(112, 92, 206), iris=(156, 70, 200),
              shirt=(250, 214, 70), head_w=0.68, head_top=0.80, head_bottom=0.86, jaw=0.55,
              ears="pointy", hair_back="bun", hair_front="short", eye_size=1.1, eye_round=0.9,
              eye_shape=0.7, eye_tilt=0.25, lashes=True, brow_thick=0.75, brow_arch=0.05,
              nose="line", nose_size=0.9, mouth_width=0.9, lips=(200, 70, 140), blush=0.35,
              earrings=(90, 220, 230)),
)

DEFAULT_CHARACTERS: tuple[str, ...] = tuple(c.name for c in _DEFAULTS)

_SKINS = [(255, 220, 196), (244, 200, 170), (226, 172, 120), (198, 140, 96), (160, 106, 70),
          (120, 78, 52), (92, 60, 42), (250, 230, 220)]
_HAIRS = [(28, 24, 26), (92, 54, 34), (150, 96, 50), (214, 100, 36), (244, 204, 78),
          (200, 200, 205), (112, 92, 206), (60, 140, 200), (220, 90, 150), (70, 40, 30)]
_IRISES = [(58, 150, 86), (96, 56, 28), (54, 116, 214), (108, 128, 150), (156, 70, 200),
           (40, 40, 40), (170, 120, 40), (40, 160, 170)]
_SYLLABLES = ["ka", "lo", "mi", "ra", "to", "ne", "su", "vi", "po", "ze", "da", "ru", "fe", "ni",
              "mo", "ta", "li", "ko", "ba", "yu"]


def _random_character(rng: np.random.Generator, name: str) -> Character:
    """A new identity with every style parameter drawn from ``rng``."""
    def pick(seq: Sequence[Any]) -> Any:
        return seq[int(rng.integers(len(seq)))]

    def jitter(color: RGB) -> RGB:
        return tuple(int(np.clip(c + rng.integers(-14, 15), 0, 255)) for c in color)  # type: ignore[return-value]

    hair_back = pick(["none", "bob", "long", "afro", "bun"])
    return Character(
        name, skin=jitter(pick(_SKINS)), hair=jitter(pick(_HAIRS)), iris=jitter(pick(_IRISES)),
        shirt=tuple(int(c) for c in rng.integers(30, 250, 3)),  # type: ignore[arg-type]
        head_w=float(rng.uniform(0.63, 0.75)), head_top=float(rng.uniform(0.76, 0.86)),
        head_bottom=float(rng.uniform(0.76, 0.88)), jaw=float(rng.uniform(0.0, 0.55)),
        square=float(rng.uniform(2.0, 3.0)),
        ears="none" if hair_back in ("bob", "long") else pick(["round", "round", "pointy"]),
        hair_back=hair_back,
        hair_front=pick(["bald", "short", "bangs", "swept", "spiky", "curly"]),
        eye_size=float(rng.uniform(0.85, 1.15)), eye_round=float(rng.uniform(0.75, 1.05)),
        eye_shape=float(rng.uniform(0.5, 0.8)), eye_gap=float(rng.uniform(0.93, 1.05)),
        eye_tilt=float(rng.uniform(-0.1, 0.25)), lashes=bool(rng.random() < 0.4),
        brow_thick=float(rng.uniform(0.7, 1.5)), brow_arch=float(rng.uniform(0.0, 0.05)),
        nose=pick(["button", "round", "line", "wide", "pointy"]),
        nose_size=float(rng.uniform(0.7, 1.2)), mouth_width=float(rng.uniform(0.85, 1.1)),
        lips=pick([None, None, (220, 90, 110), (190, 70, 90)]), blush=float(rng.uniform(0, 0.5)),
        freckles=bool(rng.random() < 0.2), glasses=pick(["none", "none", "none", "round", "square"]),
        beard=pick(["none"] * 4 + ["full", "goatee"]), mustache=bool(rng.random() < 0.15),
        earrings=pick([None, None, None, (250, 200, 60), (90, 220, 230)]),
    )


def make_characters(k: int = 6, seed: int = 0) -> list[Character]:
    """``k`` identities: the 6 hand-designed defaults first, then new ones drawn from ``seed``."""
    _check_count("characters", k, MAX_CHARACTERS)
    chars = list(_DEFAULTS[:k])
    names = {c.name for c in chars}
    for i in range(len(chars), k):
        rng = np.random.default_rng([seed, i])
        name = "".join(_SYLLABLES[j] for j in rng.integers(len(_SYLLABLES), size=2))
        while name in names or name in DEFAULT_CHARACTERS:
            name += _SYLLABLES[int(rng.integers(len(_SYLLABLES)))]
        names.add(name)
        chars.append(_random_character(rng, name))
    return chars


# ----------------------------------------------------------------------------- variation

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


# ----------------------------------------------------------------------------- geometry

def _shade(color: RGB, f: float) -> RGB:
    """``color`` darkened (f < 1) or lightened towards white (f > 1)."""
    if f <= 1:
        return tuple(int(c * f) for c in color)  # type: ignore[return-value]
    return tuple(int(c + (255 - c) * (f - 1)) for c in color)  # type: ignore[return-value]


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


@lru_cache(maxsize=None)
def _lin(a: float, b: float, n: int) -> np.ndarray:
    """``np.linspace``, cached (read-only: the renderer reuses these every face)."""
    out = np.linspace(a, b, n)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=None)
def _circle(n: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    return _circle(n) * (rx, ry) + (cx, cy)


def _normals(pts: np.ndarray, closed: bool) -> np.ndarray:
    """Unit normals of a polyline (left of the direction of travel)."""
    tan = np.empty_like(pts)
    tan[1:-1] = pts[2:] - pts[:-2]
    if closed:
        tan[0], tan[-1] = pts[1] - pts[-1], pts[0] - pts[-2]
    else:
        tan[0], tan[-1] = pts[1] - pts[0], pts[-1] - pts[-2]
    nrm = np.empty_like(tan)
    nrm[:, 0], nrm[:, 1] = -tan[:, 1], tan[:, 0]
    return nrm / (np.hypot(tan[:, 0], tan[:, 1])[:, None] + 1e-9)


def _stroke(pts: np.ndarray, half: float | np.ndarray) -> np.ndarray:
    """A thick open polyline as one polygon; ``half`` is the half width (scalar or per point)."""
    off = _normals(pts, closed=False) * np.reshape(half, (-1, 1))
    return np.concatenate([pts + off, (pts - off)[::-1]])


def _grow(pts: np.ndarray, d: float) -> np.ndarray:
    """A closed polygon moved outwards by ``d`` along its normals (its outline, drawn below it)."""
    x, y = pts[:, 0], pts[:, 1]
    area = np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:]) + x[-1] * y[0] - y[-1] * x[0]
    return pts - np.sign(area) * d * _normals(pts, closed=True)


def _ring(pts: np.ndarray, half: float) -> np.ndarray:
    """A closed outline of width ``2*half`` (the polygon fill is even-odd, so the hole stays)."""
    nrm = _normals(pts, closed=True) * half
    outer, inner = pts + nrm, pts - nrm
    return np.concatenate([outer, outer[:1], inner[:1], inner[::-1]])


def _clip_disc(cx: float, cy: float, r: float, xs: np.ndarray, top: np.ndarray,
               bottom: np.ndarray, n: int = 15) -> np.ndarray | None:
    """The part of a disc between two curves y=top(x) and y=bottom(x) (xs increasing)."""
    t = _lin(0, np.pi, n)
    x = cx - r * np.cos(t)
    h = r * np.sin(t)
    lo = np.maximum(cy - h, np.interp(x, xs, top))
    hi = np.minimum(cy + h, np.interp(x, xs, bottom))
    keep = (x > xs[0]) & (x < xs[-1]) & (lo < hi)
    if keep.sum() < 2:
        return None
    x, lo, hi = x[keep], lo[keep], hi[keep]
    return np.concatenate([np.stack([x, lo], 1), np.stack([x, hi], 1)[::-1]])


class _Painter:
    """Collects filled polygons in face units, then draws them all through one affine."""

    def __init__(self) -> None:
        self.polys: list[np.ndarray] = []
        self.colors: list[tuple[int, int, int, int]] = []

    def fill(self, pts: np.ndarray | None, color: RGB) -> None:
        if pts is not None and len(pts) >= 3:
            self.polys.append(pts)
            self.colors.append((*color, 255))

    def extend(self, other: _Painter) -> None:
        self.polys += other.polys
        self.colors += other.colors

    def outlined(self, pts: np.ndarray, color: RGB, width: float = 0.022,
                 line: RGB | None = None) -> None:
        self.fill(_grow(pts, width), line or _shade(color, 0.5))
        self.fill(pts, color)

    def line(self, pts: np.ndarray, color: RGB, half: float | np.ndarray) -> None:
        self.fill(_stroke(pts, half), color)

    def draw(self, size: int, v: Variation) -> np.ndarray:
        """Rasterise at 2-4x, reduce, apply the lighting; (size, size, 4) uint8 RGBA."""
        ss = 4 if size <= 64 else 3 if size <= 128 else 2
        big = size * ss
        pts = np.concatenate(self.polys)
        a = math.radians(v.angle)
        k = v.scale * big / (2 * _HALF)
        rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) * k
        pts = pts @ rot.T + (big / 2 + v.dx * big, big / 2 + v.dy * big)
        img = Image.new("RGBa", (big, big))
        draw = ImageDraw.Draw(img)
        start = 0
        for poly, color in zip(self.polys, self.colors):
            end = start + len(poly)
            draw.polygon(pts[start:end].ravel().tolist(), fill=color)
            start = end
        out = np.array(img.reduce(ss).convert("RGBA"))
        if v.light or v.shade:
            gx, gy = _grid(size)
            s = math.radians(v.shade_angle)
            f = 1 + 0.08 * v.light - 0.14 * v.shade * (gx * math.cos(s) + gy * math.sin(s))
            out[..., :3] = np.clip(out[..., :3] * f[..., None], 0, 255).astype(np.uint8)
        return out


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.linspace(-1, 1, size, dtype=np.float32)
    return np.meshgrid(c, c)


# ----------------------------------------------------------------------------- face parts

def _head_outline(ch: Character, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    e = 2 / ch.square
    x = np.sign(c) * np.abs(c) ** e
    y = np.sign(s) * np.abs(s) ** e
    x = x * (1 - ch.jaw * np.clip(y, 0, 1) ** 2) * ch.head_w
    y = np.where(y < 0, y * ch.head_top, y * ch.head_bottom)
    return np.stack([x, y], axis=1)


def _arc(ch: Character, t0: float, t1: float, grow: float, n: int) -> np.ndarray:
    """Points on the head outline (angle t: 0 right, pi/2 chin, 3pi/2 crown), pushed out."""
    t = np.linspace(t0, t1, n)
    c, s = np.cos(t), np.sin(t)
    x = np.sign(c) * np.abs(c) ** (2 / ch.square) * (ch.head_w + grow)
    y = np.sign(s) * np.abs(s) ** (2 / ch.square)
    y = np.where(y < 0, y * (ch.head_top + grow), y * (ch.head_bottom + grow))
    return np.stack([x, y], axis=1)


def _hair_back(p: _Painter, ch: Character) -> None:
    w, top = ch.head_w, ch.head_top
    if ch.hair_back == "bob":
        arc = _arc(ch, np.pi - 0.8, 2 * np.pi + 0.8, 0.14, 32)
        x, y = arc[-1]
        p.outlined(np.concatenate([arc, [[x + 0.06, y + 0.04], [-x - 0.06, y + 0.04]]]), ch.hair)
    elif ch.hair_back == "long":
        arc = _arc(ch, np.pi - 0.1, 2 * np.pi + 0.1, 0.09, 30)
        tail = [[w + 0.16, 0.6], [w + 0.2, 0.95], [w - 0.1, 1.0], [-w + 0.1, 1.0], [-w - 0.2, 0.95],
                [-w - 0.16, 0.6]]
        p.outlined(np.concatenate([arc, tail]), ch.hair)
    elif ch.hair_back == "afro":
        t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
        r = 0.88 * (1 + 0.04 * np.cos(14 * t))
        p.outlined(np.stack([r * np.cos(t) * 1.08, r * np.sin(t) - 0.1], 1), ch.hair)
    elif ch.hair_back == "bun":
        p.outlined(_ellipse(0, -top - 0.05, 0.22, 0.17), ch.hair)
        p.fill(_stroke(np.array([[-0.1, -top + 0.03], [0.0, -top + 0.06], [0.1, -top + 0.03]]),
                       0.03), _shade(ch.shirt, 0.9))


def _hair_front(p: _Painter, ch: Character) -> None:
    w, top, style = ch.head_w, ch.head_top, ch.hair_front
    if style == "bald":
        p.line(_arc(ch, 4.2, 4.6, -0.07, 6), _shade(ch.skin, 1.35), 0.025)
        return
    x = np.linspace(1, -1, 21)
    if style == "short":
        arc = _arc(ch, np.pi + 0.1, 2 * np.pi - 0.1, 0.03, 24)
        line = np.stack([x * w * 0.95, -0.62 * top + 0.4 * x ** 2], 1)
    elif style == "bangs":
        arc = _arc(ch, np.pi - 0.25, 2 * np.pi + 0.25, 0.05, 28)
        y = -0.3 + 0.03 * np.abs(np.sin(x * 9)) - 0.05 * x ** 2
        line = np.concatenate([[[w * 0.92, 0.2]], np.stack([x * w * 0.9, y], 1)[1:-1],
                               [[-w * 0.92, 0.2]]])
    elif style == "swept":
        arc = _arc(ch, np.pi - 0.15, 2 * np.pi + 0.1, 0.05, 28)
        y = -0.52 + 0.3 * ((1 - x) / 2) ** 1.5
        line = np.concatenate([[[w * 0.92, 0.1]], np.stack([x * w * 0.92, y], 1)[1:-1],
                               [[-w * 0.95, 0.2]]])
    elif style == "spiky":
        t = np.linspace(np.pi + 0.05, 2 * np.pi - 0.05, 23)
        arc = _arc(ch, t[0], t[-1], 0.0, len(t))
        out = np.where(np.arange(len(t)) % 2 == 1, 0.2, 0.03)
        arc = arc * (1 + out[:, None] / np.hypot(*arc.T)[:, None])
        line = np.stack([x * w * 0.95, -0.48 * top + 0.3 * x ** 2
                         + 0.04 * (np.arange(21) % 2)], 1)
    else:  # curly
        arc = _arc(ch, np.pi + 0.05, 2 * np.pi - 0.05, 0.06, 30)
        line = np.stack([x * w * 0.95, -0.5 * top + 0.3 * x ** 2
                         + 0.035 * np.abs(np.sin(x * 8))], 1)
    poly = np.concatenate([arc, line])
    p.outlined(poly, ch.hair)
    shine = _arc(ch, 4.25, 4.75, -0.03, 7)
    p.line(shine, _shade(ch.hair, 1.35), np.array([0.006, 0.015, 0.02, 0.02, 0.02, 0.015, 0.006]))


def _ears(p: _Painter, ch: Character) -> None:
    if ch.ears == "none":
        return
    for side in (-1, 1):
        cx = side * ch.head_w * 0.96
        if ch.ears == "pointy":
            t = np.linspace(0, 1, 13)
            x = side * (0.1 * np.sin(np.pi * t) ** 0.8 + 0.12 * t ** 3)
            ear = np.stack([cx + x, 0.28 - 0.42 * t], 1)
            ear = np.concatenate([ear, [[cx - side * 0.04, -0.12], [cx - side * 0.04, 0.28]]])
        else:
            ear = _ellipse(cx + side * 0.02, 0.13, 0.1, 0.15, 20)
        p.outlined(ear, ch.skin)
        p.fill(_ellipse(cx + side * 0.04, 0.14, 0.04, 0.08, 12), _shade(ch.skin, 0.8))
        if ch.earrings:
            p.outlined(_ellipse(cx + side * 0.03, 0.33, 0.035, 0.035, 12), ch.earrings, 0.012)


def _body(p: _Painter, ch: Character) -> None:
    neck = np.array([[-0.22, 0.4], [0.22, 0.4], [0.25, 1.4], [-0.25, 1.4]])
    p.outlined(neck, _shade(ch.skin, 0.86))
    shirt = np.array([[-0.32, 1.0], [-0.12, 1.02], [0.0, 1.12], [0.12, 1.02], [0.32, 1.0],
                      [0.66, 1.6], [-0.66, 1.6]])
    p.outlined(shirt, ch.shirt)


def _brows(p: _Painter, ch: Character, k: dict[str, float]) -> None:
    color = ch.brow or _shade(ch.hair, 0.55)
    rh = 0.155 * ch.eye_size * ch.eye_round
    base = _EYE_Y - rh - 0.11
    t = _lin(0, 1, 9)
    for side in (-1, 1):
        lift = 0.045 * k["sneer"] * side  # disgust: the sneering side's brow sits lower
        xi = side * (0.1 * ch.eye_gap - 0.05 * k["brow_knit"])
        xo = side * 0.46 * ch.eye_gap
        yi = base - 0.13 * k["brow_inner_up"] + 0.11 * k["brow_lower"] + 0.02 * k["brow_knit"]
        yo = base - 0.12 * k["brow_outer_up"] - 0.02 * k["brow_lower"] - lift
        arch = ch.brow_arch + 0.04 * k["brow_outer_up"] - 0.02 * k["brow_lower"]
        pts = np.stack([xi + (xo - xi) * t, yi + (yo - yi) * t - arch * np.sin(np.pi * t)], 1)
        p.line(pts, color, 0.03 * ch.brow_thick * (1.1 - 0.55 * t))


def _eyes(p: _Painter, ch: Character, k: dict[str, float], v: Variation) -> None:
    rw = 0.155 * ch.eye_size
    rh = rw * ch.eye_round
    u = -np.cos(_lin(0, np.pi, 17))  # -1 inner corner .. 1 outer corner
    f = (1 - u ** 2) ** ch.eye_shape
    inner, outer = (1 - u) / 2, (1 + u) / 2
    o_up = (1 + 0.5 * k["lid_raise"] - 0.45 * k["lid_tighten"] - 0.3 * k["lid_droop"]
            - 0.5 * k["lid_droop"] * outer - 0.6 * k["brow_lower"] * inner) * (1 - v.blink)
    o_lo = (1 + 0.15 * k["lid_raise"] - 1.3 * k["cheek_raise"] - 0.4 * k["lid_tighten"]) \
        * (1 - v.blink)
    ink = _shade(ch.hair, 0.35) if ch.lashes else _INK
    for side in (-1, 1):
        ex = side * 0.29 * ch.eye_gap
        x = ex + side * u * rw
        base = _EYE_Y - ch.eye_tilt * u * rh
        top = base - rh * np.maximum(o_up, -0.1) * f
        bot = np.maximum(base + rh * o_lo * f, top)
        order = slice(None) if side > 0 else slice(None, None, -1)
        xs, ts, bs = x[order], top[order], bot[order]
        p.fill(np.concatenate([np.stack([x, top], 1), np.stack([x, bot], 1)[::-1]]),
               (252, 252, 250))
        ri = 0.6 * rw
        cx, cy = ex + v.gaze_x * rw * 0.4, _EYE_Y + v.gaze_y * rh * 0.35
        p.fill(_clip_disc(cx, cy, ri, xs, ts, bs), _shade(ch.iris, 0.6))
        p.fill(_clip_disc(cx, cy, ri * 0.8, xs, ts, bs), ch.iris)
        p.fill(_clip_disc(cx, cy, ri * 0.48 * (1 - 0.3 * k["lid_raise"]), xs, ts, bs), (20, 16, 20))
        p.fill(_clip_disc(cx - 0.35 * ri, cy - 0.4 * ri, 0.28 * ri, xs, ts, bs, 9),
               (255, 255, 255))
        p.line(np.stack([x, bot], 1), _shade(ch.skin, 0.55), 0.007)
        p.line(np.stack([x, top], 1), ink, 0.008 + 0.018 * f ** 0.5)
        if ch.lashes:
            for j, (dx, dy) in enumerate(((0.06, -0.03), (0.045, -0.065))):
                root = np.array([x[-1 - 2 * j], top[-1 - 2 * j]])
                p.line(np.stack([root, root + (side * dx, dy)]), ink, np.array([0.012, 0.004]))


def _nose(p: _Painter, ch: Character, k: dict[str, float]) -> float:
    """Draw the nose (and the wrinkles over it); returns its y, which the folds start from."""
    s, wr = ch.nose_size, k["nose_wrinkle"]
    y = _NOSE_Y - 0.035 * wr - 0.02 * k["upper_lip_raise"]
    dark = _shade(ch.skin, 0.72)
    flare = 1 + 0.35 * max(wr, 0)
    if ch.nose == "button":
        p.fill(_ellipse(0, y, 0.065 * s * flare, 0.045 * s, 16), dark)
        p.fill(_ellipse(-0.015, y - 0.012, 0.03 * s, 0.018 * s, 10), _shade(ch.skin, 1.25))
    elif ch.nose == "round":
        p.outlined(_ellipse(0, y - 0.01, 0.1 * s * flare, 0.08 * s, 20), _mix(ch.skin, (220, 90, 80),
                                                                                0.25), 0.015)
        p.fill(_ellipse(-0.03, y - 0.04, 0.03 * s, 0.02 * s, 10), _shade(ch.skin, 1.3))
    elif ch.nose == "line":
        pts = np.array([[0.03, y - 0.13], [0.0, y - 0.04], [-0.035, y + 0.01], [0.0, y + 0.025],
                        [0.04, y + 0.015]]) * (s, 1) + (0, 0)
        p.line(pts, dark, np.array([0.004, 0.008, 0.011, 0.01, 0.005]))
    elif ch.nose == "wide":
        t = _lin(-1, 1, 9)
        p.line(np.stack([t * 0.1 * s * flare, y + 0.025 - 0.03 * (1 - t ** 2)], 1), dark, 0.011)
        for side in (-1, 1):
            p.fill(_ellipse(side * 0.05 * s * flare, y + 0.005, 0.022, 0.015, 10), _shade(ch.skin, 0.5))
    else:  # pointy
        p.fill(np.array([[0.0, y - 0.14], [0.07 * s * flare, y + 0.03], [-0.03 * s, y + 0.035]]), dark)
    if wr > 0.25:
        a = min((wr - 0.25) / 0.6, 1.0)
        for j in range(3):
            yy = _EYE_Y + 0.02 + 0.045 * j - 0.02 * wr
            xx = _lin(-0.05, 0.05, 5)
            p.line(np.stack([xx, yy - 0.012 * np.cos(xx * 30)], 1), _shade(ch.skin, 0.6),
                   0.009 * a)
    return y


def _cheeks(p: _Painter, ch: Character, k: dict[str, float], nose_y: float) -> None:
    """Blush (stronger when the cheeks rise), freckles, and the folds beside the nose."""
    amount = min(0.25 * ch.blush + 0.3 * max(k["cheek_raise"], 0), 0.5)
    if amount > 0.04:
        for side in (-1, 1):
            p.fill(_ellipse(side * 0.42, 0.33 - 0.04 * k["cheek_raise"], 0.11, 0.065, 16),
                   _mix(ch.skin, (255, 96, 110), amount))
    p.extend(_layers(ch)[2])
    dark = _shade(ch.skin, 0.62)
    for side in (-1, 1):
        fold = (0.9 * k["sneer"] * (side < 0) + 0.5 * k["upper_lip_raise"] + 0.5 * k["cheek_raise"]
                - 0.25)
        if fold > 0:
            t = _lin(0, 1, 7)
            pts = np.stack([side * (0.13 + 0.13 * t + 0.05 * np.sin(np.pi * t)),
                            nose_y - 0.03 + (_MOUTH_Y - nose_y + 0.02) * t], 1)
            p.line(pts, dark, min(fold, 1) * 0.011 * np.sin(np.pi * (0.1 + 0.8 * t)))


def _wrinkles(p: _Painter, ch: Character, k: dict[str, float]) -> None:
    dark = _shade(ch.skin, 0.65)
    up = max(k["brow_inner_up"], k["brow_outer_up"]) - 0.4
    if up > 0:
        x = _lin(-0.22, 0.22, 9)
        for j in range(2):
            y = -0.36 - 0.07 * j + 0.015 * np.sin(x * 14 + j)
            p.line(np.stack([x, y], 1), dark, min(up / 0.5, 1) * 0.01 * np.sin(_lin(0.3, 2.8, 9)))
    knit = max(k["brow_knit"], k["brow_lower"]) - 0.45
    if knit > 0:
        for side in (-1, 1):
            pts = np.array([[side * 0.035, -0.2], [side * 0.028, -0.15], [side * 0.035, -0.1]])
            p.line(pts, dark, min(knit / 0.4, 1) * np.array([0.004, 0.009, 0.004]))


def _beard(p: _Painter, ch: Character) -> None:
    if ch.beard == "full":
        arc = _arc(ch, 0.1, np.pi - 0.1, 0.05, 24)
        inner = np.array([[-ch.head_w, 0.2], [-0.45, 0.42], [-0.2, 0.4], [0.0, 0.42], [0.2, 0.4],
                          [0.45, 0.42], [ch.head_w, 0.2]])
        p.outlined(np.concatenate([arc, inner]), ch.hair, 0.018)
    elif ch.beard == "goatee":
        p.outlined(_ellipse(0, _MOUTH_Y + 0.22, 0.13, 0.1, 16), ch.hair, 0.018)


def _mouth(p: _Painter, ch: Character, k: dict[str, float]) -> None:
    op, st, rd = max(k["mouth_open"], 0), k["lip_stretch"], max(k["lip_round"], 0)
    up, down, ulr, sn = k["corner_up"], k["corner_down"], max(k["upper_lip_raise"], 0), k["sneer"]
    hw = max(0.19 * ch.mouth_width * (1 + 0.4 * st + 0.3 * up + 0.15 * down - 0.5 * rd + 0.1 * op),
             0.05)
    xr = -np.cos(_lin(0, np.pi, 25))
    prof = 1 - xr ** 2
    cl = -0.12 * up + 0.1 * down + 0.02 * st - 0.09 * sn
    cr = -0.12 * up + 0.1 * down + 0.02 * st + 0.02 * sn
    corners = _MOUTH_Y + cl + (cr - cl) * (xr + 1) / 2
    curv = -(cl + cr) / 2
    shape = prof ** float(np.clip(1 - 0.5 * rd - 0.7 * st * min(op * 3, 1), 0.25, 1))
    a_u = 0.06 * op + 0.07 * ulr + 0.04 * rd * op
    a_l = 0.24 * op + 0.02 * ulr
    top = corners + (curv * (1 - 0.75 * min(op * 2.5, 1)) - a_u) * shape
    top = top - 0.08 * max(sn, 0) * np.clip(0.3 - xr, 0, 1) * prof ** 0.5
    bot = np.maximum(corners + (curv + a_l) * shape, top)
    x = xr * hw
    line = _shade(ch.lips, 0.6) if ch.lips else _shade(ch.skin, 0.38)
    w = 0.017
    edge = prof ** 0.3
    xo = xr * (hw + 1.3 * w)
    outline = np.concatenate([np.stack([xo, top - w * edge], 1),
                              np.stack([xo, bot + w * edge], 1)[::-1]])
    if ch.beard == "full":
        p.fill(_grow(outline, 0.035), _shade(ch.skin, 0.9))
    p.fill(outline, line)
    if ch.lips:
        p.fill(np.concatenate([np.stack([x * 0.8, bot + w * edge], 1)[::-1],
                               np.stack([x * 0.8, bot + w * edge + 0.03 * prof ** 0.7], 1)]),
               ch.lips)
    gap = bot - top
    if gap.max() < 0.006:
        return
    cavity = (110, 30, 40)
    p.fill(np.concatenate([np.stack([x, top], 1), np.stack([x, bot], 1)[::-1]]), cavity)
    if op > 0.2:
        tongue = bot - np.minimum(0.07, 0.45 * gap) * prof ** 0.5
        p.fill(np.concatenate([np.stack([x, tongue], 1), np.stack([x, bot], 1)[::-1]]),
               (226, 104, 116))
    t = min(max(k["teeth"], 0), 1.2)
    if t > 0.05:
        ut = top + np.minimum(0.06 * t, 0.6 * gap)
        lt = bot - np.minimum(0.045 * t, 0.4 * gap)
        teeth = (250, 250, 244)
        p.fill(np.concatenate([np.stack([x, top], 1), np.stack([x, ut], 1)[::-1]]), teeth)
        p.fill(np.concatenate([np.stack([x, lt], 1), np.stack([x, bot], 1)[::-1]]), teeth)
        p.line(np.stack([x, ut], 1), cavity, 0.005 * prof ** 0.5)


def _mustache(p: _Painter, ch: Character, k: dict[str, float]) -> None:
    y = _MOUTH_Y - 0.07 - 0.05 * k["corner_up"] - 0.07 * max(k["upper_lip_raise"], 0)
    for side in (-1, 1):
        t = _lin(0, 1, 8)
        pts = np.stack([side * (0.02 + 0.24 * t), y + 0.05 * t ** 2 - 0.02 * np.sin(np.pi * t)], 1)
        p.line(pts, _shade(ch.hair, 0.8), 0.035 * (1 - 0.7 * t) + 0.008)


def _glasses(p: _Painter, ch: Character) -> None:
    rw = 0.155 * ch.eye_size
    col = ch.glasses_color
    for side in (-1, 1):
        ex = side * 0.29 * ch.eye_gap
        if ch.glasses == "round":
            p.fill(_ring(_ellipse(ex, _EYE_Y, rw * 1.45, rw * 1.3, 28), 0.016), col)
        else:
            t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
            c, s = np.cos(t), np.sin(t)
            sq = np.stack([np.sign(c) * np.abs(c) ** 0.4, np.sign(s) * np.abs(s) ** 0.4], 1)
            p.fill(_ring(sq * (rw * 1.5, rw * 1.05) + (ex, _EYE_Y + 0.01), 0.018), col)
        p.line(np.array([[side * ch.head_w * 0.98, _EYE_Y - 0.04],
                         [ex + side * rw * 1.45, _EYE_Y - 0.04]]), col, 0.014)
    gap = 0.29 * ch.eye_gap - rw * 1.45
    p.line(np.stack([np.linspace(-gap - 0.01, gap + 0.01, 5),
                     _EYE_Y - 0.05 - 0.02 * np.sin(np.linspace(0, np.pi, 5))], 1), col, 0.014)


@lru_cache(maxsize=256)
def _layers(ch: Character) -> tuple[_Painter, _Painter, _Painter, _Painter]:
    """The parts no expression moves, built once per character: below the face (back hair,
    neck, ears, head), above the forehead (front hair, beard), freckles, glasses."""
    below, above, freckles, glasses = _Painter(), _Painter(), _Painter(), _Painter()
    _hair_back(below, ch)
    _body(below, ch)
    _ears(below, ch)
    below.outlined(_head_outline(ch), ch.skin)
    _hair_front(above, ch)
    _beard(above, ch)
    if ch.freckles:
        for side in (-1, 1):
            for fx, fy in ((0.34, 0.27), (0.42, 0.3), (0.5, 0.26), (0.38, 0.35), (0.47, 0.36)):
                freckles.fill(_ellipse(side * fx, fy, 0.014, 0.014, 8),
                              _mix(ch.skin, (150, 80, 40), 0.45))
    if ch.glasses != "none":
        _glasses(glasses, ch)
    return below, above, freckles, glasses


def _render(ch: Character, controls: np.ndarray, v: Variation, size: int) -> np.ndarray:
    """Draw one face; ``controls`` in ``CONTROLS`` order, before the variation's intensity."""
    k = dict(zip(CONTROLS, np.clip(controls * v.intensity, -1.0, 1.5).tolist()))
    below, above, _, glasses = _layers(ch)
    p = _Painter()
    p.extend(below)
    _wrinkles(p, ch, k)
    p.extend(above)
    nose_y = _NOSE_Y - 0.035 * k["nose_wrinkle"]
    _cheeks(p, ch, k, nose_y)
    _eyes(p, ch, k, v)
    p.extend(glasses)
    _brows(p, ch, k)
    _nose(p, ch, k)
    if ch.mustache:
        _mustache(p, ch, k)
    _mouth(p, ch, k)
    return p.draw(size, v)


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"image size must be a whole number of pixels from {MIN_SIZE} to "
                        f"{MAX_SIZE}, got {size}")


def _check_count(what: str, value: int, most: int | None = None) -> None:
    bad = not isinstance(value, (int, np.integer)) or value < 1 or (most is not None and value > most)
    if bad:
        limit = f" from 1 to {most}" if most is not None else " of at least 1"
        raise UserError(f"{what} must be a whole number{limit}, got {value}")


def render_face(character: Character, affect: Affect, variation: Variation | None = None,
                size: int = 128) -> Image.Image:
    """Render one face as an RGBA image with a transparent background.

    ``affect`` is any affect form ``affect_to_controls`` accepts (mixed expressions included);
    ``variation`` defaults to the canonical ``Variation()``.
    """
    _check_size(size)
    controls = np.array(list(affect_to_controls(affect).values()))
    return Image.fromarray(_render(character, controls, variation or Variation(), size), "RGBA")


# ----------------------------------------------------------------------------- datasets

@dataclass
class ToonArrays:
    """Rendered faces in memory, in the order character > expression > n, with ground truth."""

    images: np.ndarray        # (N, S, S, 4) uint8 RGBA
    expression: np.ndarray    # (N,) int64, index into EXPRESSIONS
    identity: np.ndarray      # (N,) int64, index into characters
    characters: list[str]
    records: list[dict[str, Any]]


Job = tuple[int, int, int]  # (character index, expression index, n from 1)


def _render_jobs(chars: list[Character], jobs: list[Job], seed: int, size: int, jitter: bool,
                 out: Path | None) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
    """Render a chunk of dataset images (in a worker): save them under ``out``, or return them."""
    images, records = [], []
    for ci, ei, n in jobs:
        ch, expr = chars[ci], EXPRESSIONS[ei]
        v = variation_for(seed, ci, ei, n, jitter)
        img = _render(ch, _POINTS[ei], v, size)
        rec: dict[str, Any] = {
            "character": ch.name, "expression": expr, "n": n,
            "affect": np.eye(len(EXPRESSIONS))[ei].tolist(),
            "controls": {c: round(float(x), 4) for c, x in zip(CONTROLS, _POINTS[ei] * v.intensity)},
            "variation": asdict(v),
        }
        if out is None:
            images.append(img)
        else:
            rel = f"{ch.name}/{ch.name}_{expr}/{ch.name}_{expr}_{n}.png"
            Image.fromarray(img, "RGBA").save(out / rel, format="PNG")
            rec = {"path": rel, **rec}
        records.append(rec)
    return (np.stack(images) if images else None), records


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run(chars: list[Character], per_class: int, seed: int, size: int, jitter: bool, workers: int | None,
         progress: bool, out: Path | None) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Render every (character, expression, n), in order, on ``workers`` processes."""
    jobs = [(ci, ei, n) for ci in range(len(chars)) for ei in range(len(EXPRESSIONS))
            for n in range(1, per_class + 1)]
    workers = workers or _default_workers()
    if len(jobs) < 128:  # a pool costs more than it saves
        workers = 1
    step = int(np.clip(len(jobs) // (workers * 8), 1, 64))
    chunks = [jobs[i:i + step] for i in range(0, len(jobs), step)]
    images: list[np.ndarray] = []
    records: list[dict[str, Any]] = []
    bar = None
    if progress:
        from rich.console import Console
        from rich.progress import Progress

        bar = Progress(console=Console(stderr=True))
        task = bar.add_task(f"rendering {len(jobs)} toon faces", total=len(jobs))
        bar.start()
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        n = len(chunks)
        args = ([chars] * n, chunks, [seed] * n, [size] * n, [jitter] * n, [out] * n)
        results = pool.map(_render_jobs, *args) if pool else map(_render_jobs, *args)
        for chunk, (imgs, recs) in zip(chunks, results):
            if imgs is not None:
                images.append(imgs)
            records.extend(recs)
            if bar is not None:
                bar.advance(task, len(chunk))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.stop()
    return images, records


def _check_dataset_args(per_class: int, size: int, characters: int, workers: int | None) -> None:
    _check_count("per-class (images per character and expression)", per_class)
    _check_size(size)
    _check_count("characters", characters, MAX_CHARACTERS)
    if workers is not None:
        _check_count("workers", workers)


def render_arrays(per_class: int = 200, size: int = 128, characters: int = 6, seed: int = 0,
                  workers: int | None = None, progress: bool = False, jitter: bool = False) -> ToonArrays:
    """Render the dataset into memory: ``per_class`` images per (character, expression); ``jitter``
    as in ``sample_variation``."""
    _check_dataset_args(per_class, size, characters, workers)
    chars = make_characters(characters, seed)
    images, records = _run(chars, per_class, seed, size, jitter, workers, progress, None)
    names = [c.name for c in chars]
    return ToonArrays(
        images=np.concatenate(images),
        expression=np.array([EXPRESSIONS.index(r["expression"]) for r in records], dtype=np.int64),
        identity=np.array([names.index(r["character"]) for r in records], dtype=np.int64),
        characters=names, records=records)


def render_dataset(out: Path, per_class: int = 200, size: int = 128, characters: int = 6,
                   seed: int = 0, workers: int | None = None, progress: bool = True,
                   jitter: bool = False) -> Path:
    """Write the dataset in FERG-DB's layout plus ``manifest.json``; returns the manifest path.

    Layout: ``<out>/<char>/<char>_<expr>/<char>_<expr>_<n>.png`` with n from 1. The manifest
    lists every image's relative path and ground truth (character, expression, n, affect,
    controls, variation). The same arguments give byte-identical files.
    """
    _check_dataset_args(per_class, size, characters, workers)
    out = Path(out)
    chars = make_characters(characters, seed)
    try:
        for ch in chars:
            for expr in EXPRESSIONS:
                (out / ch.name / f"{ch.name}_{expr}").mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError(13, "permission denied")
    except OSError as err:
        raise UserError(f"cannot write to output folder {out}: {err.strerror or err}") from None
    _, records = _run(chars, per_class, seed, size, jitter, workers, progress, out)
    header = {"dataset": "fexgan-toon", "version": 1, "renderer_version": RENDERER_VERSION, "size": size,
              "per_class": per_class, "seed": seed, "camera": "jitter" if jitter else "fixed", "expressions": list(EXPRESSIONS), "characters": [c.name for c in chars],
              "character_styles": [asdict(c) for c in chars]}
    text = json.dumps(header)[:-1] + ',\n"images": [\n' \
        + ",\n".join(json.dumps(r) for r in records) + "\n]}\n"
    path = out / "manifest.json"
    try:
        path.write_text(text)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    return path


# ----------------------------------------------------------------------------- contact sheets

def contact_sheet(rows: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str],
                  col_labels: Sequence[str] = EXPRESSIONS) -> Image.Image:
    """A labelled characters x expressions grid of RGBA faces on a light grey background;
    ``None`` leaves a cell empty."""
    from fexgan.visuals import image_grid

    return image_grid(rows, row_labels, col_labels, background=(244, 244, 244))


def toon_contact_sheet(size: int = 128, characters: int = 6, seed: int = 0) -> Image.Image:
    """Characters x expressions sheet of canonical faces, straight from the renderer."""
    _check_size(size)
    chars = make_characters(characters, seed)
    rows = [[render_face(ch, e, None, size) for e in range(len(EXPRESSIONS))] for ch in chars]
    return contact_sheet(rows, [c.name for c in chars])


def folder_contact_sheet(folder: Path) -> Image.Image:
    """Characters x expressions sheet of a rendered folder (or FERG-DB itself): the image with
    the lowest n of each pair, found through ``manifest.json`` or else the folder layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"no such folder: {folder}")
    first: dict[tuple[str, str], tuple[int, Path]] = {}
    chars: list[str] = []
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
            chars = list(data["characters"])
            found = [(r["character"], r["expression"], int(r["n"]), folder / r["path"])
                     for r in data["images"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"cannot read {manifest}: {err}") from None
    else:
        found = []
        for png in folder.glob("*/*_*/*.png"):
            char = png.parent.parent.name
            expr = png.parent.name[len(char) + 1:]
            tail = png.stem.rsplit("_", 1)[-1]
            if png.parent.name.startswith(char + "_"):
                found.append((char, expr, int(tail) if tail.isdigit() else 1 << 30, png))
        chars = sorted({f[0] for f in found})
    for char, expr, n, path in found:
        if (char, expr) not in first or n < first[(char, expr)][0]:
            first[(char, expr)] = (n, path)
    if not first:
        raise UserError(f"no face images in {folder}; expected "
                        "<char>/<char>_<expression>/<char>_<expression>_<n>.png")
    exprs = {e for _, e in first}
    cols = [e for e in EXPRESSIONS if e in exprs] + sorted(exprs - set(EXPRESSIONS))
    rows = []
    for char in chars:
        row: list[Image.Image | None] = []
        for expr in cols:
            hit = first.get((char, expr))
            try:
                row.append(Image.open(hit[1]) if hit else None)
            except OSError as err:
                raise UserError(f"cannot read image {hit[1]}: {err}") from None
        rows.append(row)
    return contact_sheet(rows, chars, cols)
