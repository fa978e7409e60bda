"""fexgan: FExGAN facial expression generation (train, generate, evaluate, serve, export)."""
from fexgan.expressions import EXPRESSIONS, MIXED_PAIRS, parse_affect
from fexgan.errors import UserError

__version__ = "0.1.0"
__all__ = ["EXPRESSIONS", "MIXED_PAIRS", "UserError", "parse_affect", "__version__"]
