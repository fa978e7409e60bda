"""The seven expression classes and affect vectors (one weight per class)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from fexgan.errors import UserError

EXPRESSIONS: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")

# The paper's three mixed expressions (Fig. 6).
MIXED_PAIRS: tuple[tuple[str, str], ...] = (("anger", "sadness"), ("joy", "disgust"), ("fear", "surprise"))


def expression_index(name: str, classes: Sequence[str] = EXPRESSIONS) -> int:
    """Index of an expression name (case-insensitive); a clear error lists the valid names."""
    key = name.strip().lower()
    for i, c in enumerate(classes):
        if c == key:
            return i
    raise UserError(f"unknown expression '{name}'; expected one of: {', '.join(classes)}")


def one_hot(index: int | torch.Tensor, num_classes: int = len(EXPRESSIONS)) -> torch.Tensor:
    """Affect vector(s) with a single expression fully on."""
    t = torch.as_tensor(index, dtype=torch.long)
    return torch.nn.functional.one_hot(t, num_classes).float()


def parse_affect(text: str, classes: Sequence[str] = EXPRESSIONS) -> torch.Tensor:
    """Parse 'anger=0.5,sadness=0.5' (or a bare name like 'joy') into a float affect vector."""
    vec = torch.zeros(len(classes))
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts:
        raise UserError("empty affect; write it like 'anger=0.5,sadness=0.5' or 'joy'")
    given: set[int] = set()
    for part in parts:
        name, _, value = part.partition("=")
        try:
            weight = float(value) if value else 1.0
        except ValueError:
            raise UserError(f"affect weight '{value}' for '{name}' is not a number") from None
        if weight != weight:
            raise UserError(f"affect weight '{value}' for '{name}' is not a number")
        if not -10.0 <= weight <= 10.0:
            raise UserError(f"affect weight {weight:g} for '{name}' is out of range [-10, 10]")
        index = expression_index(name, classes)
        if index in given:
            raise UserError(f"'{classes[index]}' is given twice in the affect '{text}'; give each expression once")
        given.add(index)
        vec[index] = weight
    return vec
