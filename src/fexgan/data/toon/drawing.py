"""Geometry helpers in face units and the _Painter, which rasterises polygons through one affine."""
from __future__ import annotations

import math
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw

from fexgan.data.toon.characters import RGB
from fexgan.data.toon.variation import Variation

_HALF = 1.12  # the image spans [-_HALF, _HALF] face units on both axes


def _shade(color: RGB, f: float) -> RGB:
    """``color`` darkened (f < 1) or lightened towards white (f > 1)."""
    if f <= 1:
        return tuple(int(c * f) for c in color)  # type: ignore[return-value]
    return tuple(int(c + (255 - c) * (f - 1)) for c in color)  # type: ignore[return-value]


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


@cache
def _lin(a: float, b: float, n: int) -> np.ndarray:
    """``np.linspace``, cached (read-only: the renderer reuses these every face)."""
    out = np.linspace(a, b, n)
    out.flags.writeable = False
    return out


@cache
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
