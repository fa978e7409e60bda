"""Size and count limits of the renderer, and the checks that enforce them."""
from __future__ import annotations

import numpy as np

from fexgan.errors import UserError

MIN_SIZE, MAX_SIZE, MAX_CHARACTERS = 32, 256, 256


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"image size must be a whole number of pixels from {MIN_SIZE} to "
                        f"{MAX_SIZE}, got {size}")


def _check_count(what: str, value: int, most: int | None = None) -> None:
    bad = not isinstance(value, (int, np.integer)) or value < 1 or (most is not None and value > most)
    if bad:
        limit = f" from 1 to {most}" if most is not None else " of at least 1"
        raise UserError(f"{what} must be a whole number{limit}, got {value}")

