"""Mutation testing of the code that makes the numbers: losses, training step, pair sampler, latent
sampling and metrics, with mutmut (configuration: `[tool.mutmut]` in pyproject.toml).

mutmut changes one thing at a time (an operator, a constant, an argument) in the functions below and
runs the tests that cover each function; a mutant is killed when a test fails. Not part of the
timed suite (about 15-30 minutes on 2 cores).

    .venv/bin/pip install "mutmut>=3"
    .venv/bin/python benchmarks/mutation.py [--max-children 2]

Writes runs/mutation.json (every mutant's status and, for survivors, its diff) and prints the
kill rate per function.
"""
from __future__ import annotations

import argparse
import json
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
# fnmatch patterns of mutant names: module, then x_<function> or xǁ<Class>ǁ<method>
SCOPE = [
    "fexgan.losses.*",
    "fexgan.train.x_train_step__mutmut_*", "fexgan.train.x_make_batch__mutmut_*",
    "fexgan.data.xǁPairSamplerǁ*", "fexgan.data.x_augment__mutmut_*", "fexgan.data.x_split_indices__mutmut_*",
    "fexgan.models.xǁGeneratorǁreparameterize__mutmut_*",
    "fexgan.metrics.groundtruth.x_compare__mutmut_*", "fexgan.metrics.groundtruth.x_gradient_energy__mutmut_*",
    "fexgan.metrics.evaluate.x_transfer_metrics__mutmut_*",
    "fexgan.metrics.accuracy.x_stat__mutmut_*", "fexgan.metrics.accuracy.x_table1_row__mutmut_*",
]


def function_of(mutant: str) -> str:
    return re.sub(r"__mutmut_\d+$", "", mutant).replace("ǁ", ".").replace(".x_", ".").replace(".x.", ".")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep mutants/ from an earlier run (resume)")
    args = parser.parse_args()
    if not args.keep:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    start = time.time()
    subprocess.run([MUTMUT, "run", "--max-children", str(args.max_children), *SCOPE], cwd=ROOT, check=False)
    minutes = (time.time() - start) / 60
    listing = subprocess.run([MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True).stdout
    status = dict(re.findall(r"^\s*(\S+__mutmut_\d+): (.+)$", listing, flags=re.M))
    status = {m: s.strip() for m, s in status.items() if any(fnmatch(m, p) for p in SCOPE)}
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
    print(f"{len(status)} mutants in scope, {tested} tested: {dict(totals)}; killed {rate:.1%} of killed + survived "
          f"({minutes:.1f} min)")
    out = ROOT / "runs" / "mutation.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"command": "python benchmarks/mutation.py", "minutes": round(minutes, 1),
                               "totals": dict(totals), "killed_share": round(rate, 4),
                               "by_function": {k: dict(v) for k, v in by_function.items()},
                               "status": status, "survivors": survivors}, indent=2))
    print(f"details in {out}")


if __name__ == "__main__":
    main()
