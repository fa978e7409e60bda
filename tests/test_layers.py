"""The package's shape: layers as folders, each importing only the ones below it, no import circle,
no module over 450 lines and no function over 80 (read from the source, no import needed)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fexgan"
# Lowest first: a module may import its own layer and the ones before it, never one after it.
LAYERS = ["foundation", "data", "nets", "files", "generation", "metrics", "training", "serve", "cli"]
FOUNDATION = {"errors", "expressions", "config", "presets", "devices", "grids"}


def layer_of(module: str) -> str:
    """'fexgan.nets.networks' -> 'nets'; the top-level modules are the foundation."""
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in FOUNDATION | {"__init__", "__main__"}:
        return "foundation" if parts[1] in FOUNDATION else "package"
    return parts[1]


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, package: str) -> set[str]:
    """The fexgan modules `path` imports (at the top or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fexgan"):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("fexgan")}
    return names


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {i for i in imports(p, m) if i in mods and i != m} for m, p in mods.items()}


def test_every_module_is_in_a_layer() -> None:
    for module in modules():
        if module == "fexgan":
            continue
        assert layer_of(module) in [*LAYERS, "package"], f"{module} is in no layer ({', '.join(LAYERS)})"


def test_lower_layers_never_import_upper_ones() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    for module, targets in graph().items():
        if module == "fexgan" or layer_of(module) == "package":
            continue
        for target in targets:
            if target == "fexgan" or layer_of(target) == "package":
                continue
            assert rank[layer_of(target)] <= rank[layer_of(module)], f"{module} imports {target}, a layer above it"


def test_no_import_circle() -> None:
    edges = {m: {t for t in ts if t != "fexgan" and not m.startswith(t + ".")} for m, ts in graph().items()
             if m != "fexgan"}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            pytest.fail("import circle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        for target in edges.get(node, ()):
            visit(target, [*path, node])
        done.add(node)

    for module in edges:
        visit(module, [])


def test_modules_and_functions_fit_on_a_screen() -> None:
    for module, path in modules().items():
        text = path.read_text()
        assert text.count("\n") <= 450, f"{module} has {text.count(chr(10))} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{module}.{node.name} has {length} lines"
