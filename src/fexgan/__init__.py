"""fexgan: FExGAN facial expression generation (train, generate, evaluate, serve, export)."""
from typing import TYPE_CHECKING

from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS, MIXED_PAIRS, parse_affect

if TYPE_CHECKING:
    from fexgan.generation.inference import FExGAN

__version__ = "0.1.0"
__all__ = ["EXPRESSIONS", "MIXED_PAIRS", "UserError", "__version__", "load", "parse_affect"]


def load(model: str, device: str = "auto", precision: str = "auto") -> "FExGAN":
    """A trained model ready to generate, from a run folder, a model file or a shipped model name:
    `model = fexgan.load("runs/demo"); model.transfer("face.png", to="joy")` (see fexgan.generation.inference)."""
    from fexgan.generation.inference import FExGAN

    return FExGAN.load(model, device, precision)
