"""Characters: the style of each identity, the 6 hand-designed defaults and random new ones."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fexgan.data.toon.limits import MAX_CHARACTERS, _check_count

RGB = tuple[int, int, int]


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
