"""Contact sheets: labelled characters x expressions grids, from the renderer or a folder."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from fexgan.data.toon.characters import make_characters
from fexgan.data.toon.faces import render_face
from fexgan.data.toon.limits import _check_size
from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS


def contact_sheet(rows: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str],
                  col_labels: Sequence[str] = EXPRESSIONS) -> Image.Image:
    """A labelled characters x expressions grid of RGBA faces on a light grey background;
    ``None`` leaves a cell empty."""
    from fexgan.grids import image_grid

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
