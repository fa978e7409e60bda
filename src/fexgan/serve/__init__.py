"""`fexgan serve`: the web demo and HTTP API (see `server`, `engine`, `api`, `page`)."""
from fexgan.serve.engine import MB, MPX, Engine, Face, Gate, Limits, RequestError, Task
from fexgan.serve.page import describe, enlarge
from fexgan.serve.server import bind, create_app, serve

__all__ = ["MB", "MPX", "Engine", "Face", "Gate", "Limits", "RequestError", "Task", "bind", "create_app", "describe", "enlarge", "serve"]
