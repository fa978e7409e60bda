"""Toon faces: a built-in, FERG-like procedural cartoon-face dataset with ground truth.

Faces are polygons in "face units" (the head spans about -0.8..0.8, y down), moved by one affine
(shift, scale, in-plane rotation) and filled with Pillow at 2-4x the output size, then reduced;
the background is transparent, as in FERG-DB. Expressions are points in a space of facial action
controls; any 7-dim affect vector maps to controls by a weighted sum (neutral is the origin).
Each dataset image has its own generator, ``np.random.default_rng([seed, char, expr, n])``, so the
same arguments give byte-identical images in any order and in any worker process.

Modules: ``controls`` (expressions -> controls), ``characters`` (identities), ``variation``
(within-class variation), ``drawing`` (geometry, the painter), ``faces`` (face parts,
``render_face``), ``dataset`` (``render_arrays``, ``render_dataset``, ``RENDERER_VERSION``),
``sheets`` (contact sheets), ``limits`` (size and count limits).
"""
from fexgan.data.toon.characters import (
    DEFAULT_CHARACTERS,
    RGB,
    Character,
    make_characters,
)
from fexgan.data.toon.controls import (
    CONTROLS,
    EXPRESSION_CONTROLS,
    Affect,
    affect_to_controls,
)
from fexgan.data.toon.dataset import (
    RENDERER_VERSION,
    ToonArrays,
    render_arrays,
    render_dataset,
)
from fexgan.data.toon.faces import render_face
from fexgan.data.toon.limits import MAX_CHARACTERS, MAX_SIZE, MIN_SIZE
from fexgan.data.toon.sheets import (
    contact_sheet,
    folder_contact_sheet,
    toon_contact_sheet,
)
from fexgan.data.toon.variation import Variation, sample_variation, variation_for

__all__ = [
    "CONTROLS", "DEFAULT_CHARACTERS", "EXPRESSION_CONTROLS", "MAX_CHARACTERS", "MAX_SIZE", "MIN_SIZE",
    "RENDERER_VERSION", "RGB", "Affect", "Character", "ToonArrays", "Variation", "affect_to_controls",
    "contact_sheet", "folder_contact_sheet", "make_characters", "render_arrays", "render_dataset",
    "render_face", "sample_variation", "toon_contact_sheet", "variation_for",
]
