"""The face parts (hair, ears, eyes, brows, nose, mouth, ...) and render_face."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from fexgan.data.toon.characters import Character
from fexgan.data.toon.controls import CONTROLS, Affect, affect_to_controls
from fexgan.data.toon.drawing import (
    _clip_disc,
    _ellipse,
    _grow,
    _lin,
    _mix,
    _Painter,
    _ring,
    _shade,
    _stroke,
)
from fexgan.data.toon.limits import _check_size
from fexgan.data.toon.variation import Variation

_EYE_Y, _NOSE_Y, _MOUTH_Y = 0.06, 0.31, 0.53
_INK = (48, 30, 30)


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


def render_face(character: Character, affect: Affect, variation: Variation | None = None,
                size: int = 128) -> Image.Image:
    """Render one face as an RGBA image with a transparent background.

    ``affect`` is any affect form ``affect_to_controls`` accepts (mixed expressions included);
    ``variation`` defaults to the canonical ``Variation()``.
    """
    _check_size(size)
    controls = np.array(list(affect_to_controls(affect).values()))
    return Image.fromarray(_render(character, controls, variation or Variation(), size), "RGBA")
