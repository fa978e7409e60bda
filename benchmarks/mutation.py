"""Mutation testing of the code that makes the numbers: losses, training step, pair sampler, latent
sampling and metrics, with mutmut (configuration: `[tool.mutmut]` in pyproject.toml).

mutmut changes one thing at a time (an operator, a constant, an argument) in the functions below and
runs the tests that cover each function; a mutant is killed when a test fails. Not part of the
timed suite: every mutant in scope takes about 15-30 minutes on 2 cores. `--sample N` is the bounded
run: N mutants, drawn the same way on every run and spread evenly over the functions of the chosen
`--parts` (mutants are generated first, without running a test, then only those N are tested).

    .venv/bin/pip install "mutmut==3.8.1"   # generate() below uses its internals
    .venv/bin/python benchmarks/mutation.py [--max-children 2] [--sample N] [--parts losses step ...]

Writes runs/mutation.json (every mutant's status and, for survivors, its diff) and prints the
kill rate per function.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = str(Path(sys.executable).with_name("mutmut"))
# fnmatch patterns of mutant names, by part: module, then x_<function> or xǁ<Class>ǁ<method>
PARTS = {
    "losses": ["fexgan.nets.losses.*"],
    "step": ["fexgan.training.step.x_train_step__mutmut_*", "fexgan.training.step.x_make_batch__mutmut_*",
             "fexgan.data.views.x_augment__mutmut_*"],
    "sampler": ["fexgan.data.pairs.xǁPairSamplerǁ*", "fexgan.data.pairs.x_split_indices__mutmut_*"],
    "latent": ["fexgan.nets.networks.xǁGeneratorǁreparameterize__mutmut_*"],
    "metrics": ["fexgan.metrics.groundtruth.x_compare__mutmut_*", "fexgan.metrics.groundtruth.x_gradient_energy__mutmut_*",
                "fexgan.metrics.evaluate.x_transfer_metrics__mutmut_*",
                "fexgan.metrics.accuracy.x_stat__mutmut_*", "fexgan.metrics.accuracy.x_table1_row__mutmut_*"],
}
SCOPE = [pattern for patterns in PARTS.values() for pattern in patterns]
# The module of each pattern must be a file in `[tool.mutmut] only_mutate` (tests/test_checks.py).


def function_of(mutant: str) -> str:
    return re.sub(r"__mutmut_\d+$", "", mutant).replace("ǁ", ".").replace(".x_", ".").replace(".x.", ".")


def statuses() -> dict[str, str]:
    """Every generated mutant's status, as `mutmut results` lists it ('not checked' before a run)."""
    listing = subprocess.run([MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True).stdout
    return {m: s.strip() for m, s in re.findall(r"^\s*(\S+__mutmut_\d+): (.+)$", listing, flags=re.MULTILINE)}


def generate(max_children: int) -> None:
    """Write mutants/ (every mutant of `only_mutate`) without running a test: the first steps of `mutmut run`."""
    code = ("import mutmut.__main__ as m\n"
            "m.set_mutant_under_test('mutant_generation')\n"
            "m.makedirs(m.Path('mutants'), exist_ok=True)\n"
            "m.copy_src_dir(); m.copy_also_copy_files(); m.setup_source_paths(); m.store_lines_covered_by_tests()\n"
            f"m.create_mutants({max_children})\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def sample(names: list[str], patterns: list[str], n: int, seed: int = 0) -> list[str]:
    """`n` of the mutants matching `patterns`, the same ones every time: each function's mutants in a
    seeded random order, taken one function after another in turn, so that every function gets its share."""
    by_function: dict[str, list[str]] = defaultdict(list)
    for name in sorted(names, key=lambda m: (function_of(m), int(m.rsplit("_", 1)[1]))):
        if any(fnmatch(name, p) for p in patterns):
            by_function[function_of(name)].append(name)
    rng = random.Random(seed)
    queues = [rng.sample(ms, len(ms)) for _, ms in sorted(by_function.items())]
    chosen: list[str] = []
    while len(chosen) < n and any(queues):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep mutants/ from an earlier run (resume)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS),
                        help="which code to mutate (default: all of it)")
    parser.add_argument("--sample", type=int, default=0, metavar="N",
                        help="a bounded run: test only N mutants, spread over the parts' functions (0: all)")
    args = parser.parse_args()
    scope = [pattern for part in args.parts for pattern in PARTS[part]]
    if not args.keep:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    start = time.time()
    targets = scope
    if args.sample:
        generate(args.max_children)
        targets = sample(list(statuses()), scope, args.sample)
        if not targets:
            sys.exit(f"no mutant matches {scope}; update PARTS in {Path(__file__).name}")
    run = subprocess.run([MUTMUT, "run", "--max-children", str(args.max_children), *targets], cwd=ROOT, check=False)
    minutes = (time.time() - start) / 60
    status = statuses()
    status = {m: s for m, s in status.items()
              if (m in targets if args.sample else any(fnmatch(m, p) for p in scope))}
    by_function: dict[str, Counter] = defaultdict(Counter)
    for mutant, state in status.items():
        by_function[function_of(mutant)][state] += 1
    survivors = {m: subprocess.run([MUTMUT, "show", m], cwd=ROOT, capture_output=True, text=True).stdout
                 for m, s in status.items() if s == "survived"}
    totals = Counter(status.values())
    tested = sum(totals.values()) - totals.get("no tests", 0) - totals.get("not checked", 0)
    rate = totals.get("killed", 0) / max(1, totals.get("killed", 0) + totals.get("survived", 0))
    for name, counts in sorted(by_function.items()):
        print(f"{name:55s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    what = f"{len(status)} mutants sampled" if args.sample else f"{len(status)} mutants in scope"
    print(f"{what}, {tested} tested: {dict(totals)}; killed {rate:.1%} of killed + survived ({minutes:.1f} min)")
    command = "python benchmarks/mutation.py " + " ".join(sys.argv[1:])
    out = ROOT / "runs" / "mutation.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"command": command.strip(), "parts": args.parts, "sample": args.sample,
                               "minutes": round(minutes, 1), "totals": dict(totals), "killed_share": round(rate, 4),
                               "by_function": {k: dict(v) for k, v in by_function.items()},
                               "status": status, "survivors": survivors}, indent=2, ensure_ascii=False))
    print(f"details in {out}")
    if run.returncode or not tested:  # e.g. a selected test fails on the unchanged code: nothing was measured
        sys.exit(f"mutmut run exited with {run.returncode} and tested {tested} mutants")


if __name__ == "__main__":
    main()
