"""Checks on the checks: the planted bugs (benchmarks/planted_bugs.py) and the mutation testing's scope
(benchmarks/mutation.py, `[tool.mutmut]` in pyproject.toml) still aim at today's code. Reads files only."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> ModuleType:
    """A benchmarks/ script as a module (its `main` does not run)."""
    spec = importlib.util.spec_from_file_location(f"fexgan_checks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


PLANTED = load("planted_bugs")
MUTATION = load("mutation")
MUTMUT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]


def defines(path: Path, name: str) -> bool:
    """Whether the file at `path` defines a function or method `name`."""
    return re.search(rf"^\s*def {re.escape(name)}\(", path.read_text(), flags=re.MULTILINE) is not None


@pytest.mark.parametrize("bug", PLANTED.BUGS, ids=lambda bug: bug.name)
def test_every_planted_bugs_text_is_in_its_file_exactly_once(bug) -> None:
    assert PLANTED.applies(bug) is None, f"planted bug '{bug.name}': {PLANTED.applies(bug)}; update BUGS"
    assert bug.new != bug.old and bug.new not in (ROOT / bug.file).read_text()


@pytest.mark.parametrize("bug", PLANTED.BUGS, ids=lambda bug: bug.name)
def test_every_planted_bugs_tests_exist(bug) -> None:
    path, _, test = bug.tests.partition("::")
    assert (ROOT / path).is_file(), bug.tests
    assert not test or defines(ROOT / path, test), bug.tests


def test_the_planted_bugs_have_distinct_names() -> None:
    names = [bug.name for bug in PLANTED.BUGS]
    assert len(set(names)) == len(names)


def test_every_path_mutmut_mutates_exists() -> None:
    assert MUTMUT["only_mutate"]
    missing = [path for path in MUTMUT["only_mutate"] if not (ROOT / path).is_file()]
    assert missing == [], f"[tool.mutmut] only_mutate names files that do not exist: {missing}"


def test_every_test_mutmut_runs_exists() -> None:
    for node in MUTMUT["pytest_add_cli_args_test_selection"]:
        path, _, test = node.partition("::")
        assert (ROOT / path).is_file() and (not test or defines(ROOT / path, test)), node


@pytest.mark.parametrize("pattern", MUTATION.SCOPE)
def test_every_function_in_the_mutation_scope_is_in_a_mutated_file(pattern: str) -> None:
    """`fexgan.training.step.x_train_step__mutmut_*`: src/fexgan/training/step.py is mutated and defines train_step;
    `fexgan.data.xǁPairSamplerǁ*`: src/fexgan/data.py is mutated and defines class PairSampler."""
    module, _, mangled = pattern.rpartition(".")
    path = "src/" + module.replace(".", "/") + ".py"
    assert path in MUTMUT["only_mutate"], f"{pattern}: {path} is not in [tool.mutmut] only_mutate"
    assert (ROOT / path).is_file(), pattern
    if mangled == "*":
        return
    name = re.sub(r"__mutmut_\*$", "", mangled)
    if name.startswith("xǁ"):
        cls, _, method = name[2:].partition("ǁ")
        assert re.search(rf"^class {cls}\b", (ROOT / path).read_text(), flags=re.MULTILINE), pattern
        assert method in ("", "*") or defines(ROOT / path, method), pattern
    else:
        assert defines(ROOT / path, name.removeprefix("x_")), pattern
