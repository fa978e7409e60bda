"""Planted bugs: each one, alone, in a copy of the source, must make the test suite fail.

For every bug in `BUGS` the script copies `src/` and `tests/` into a temporary folder, makes the one
edit, and runs the tests that should catch it there (`PYTHONPATH` puts the copy first, so `fexgan`
and the `fexgan` command both run the planted code). A bug is caught when those tests fail; the
run also checks that the same tests pass on the unchanged copy, so a failure means the bug.

Every bug is tried and reported: `caught`, `MISSED`, `NOT APPLIED` (its text is not in its file
exactly once: the code moved, update `BUGS`; tests/test_checks.py fails on that too) or `UNCHECKED`
(its tests fail on the unchanged copy). The exit status is 0 only when every bug was caught.

    .venv/bin/python benchmarks/planted_bugs.py [--only NAME]

Writes runs/planted_bugs.json and prints one line per bug.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bug:
    name: str
    file: str    # relative to the repository root
    old: str     # text that must be in `file` exactly once
    new: str     # what the bug puts in its place
    tests: str   # the tests that must catch it (a file or node id, relative to the root)


BUGS = [
    # the four of the issue "A test suite that catches wrong numbers"
    Bug("sampling forgets the mean", "src/fexgan/nets/networks.py", "return mu + torch.exp(log_sigma) * eps",
        "return torch.exp(log_sigma) * eps", "tests/nets/test_models.py"),
    Bug("real term classified against the target", "src/fexgan/training/step.py",
        'discriminator_loss(real_logit.float(), real_cls.float(), batch["source_class"]',
        'discriminator_loss(real_logit.float(), real_cls.float(), batch["target_class"]', "tests/training/test_train.py"),
    Bug("no adversarial gradient reaches G", "src/fexgan/training/step.py", "fake_logit, fake_cls = unwrap(D)(seen_fake)",
        "fake_logit, fake_cls = unwrap(D)(seen_fake.detach())", "tests/training/test_train.py"),
    Bug("late schedule never reaches the loss", "src/fexgan/training/loop.py",
        "self.tuner(train_step, self.nets, batch, cfg, cfg.losses.alpha_late if late else cfg.losses.alpha,",
        "self.tuner(train_step, self.nets, batch, cfg, cfg.losses.alpha,", "tests/training/test_train.py"),
    # planted here, of the same kinds
    Bug("both ranks read the same shard", "src/fexgan/data/pairs.py",
        "mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)",
        "mine = slice(0, self.batch_size)", "tests/data/test_data.py"),
    Bug("only the source is augmented", "src/fexgan/training/step.py",
        "source, target = augment(torch.cat([source, target], 1), cfg.data.augment_shift, cfg.data.augment_scale,\n"
        "                                 generator).split(3, dim=1)",
        "source = augment(source, cfg.data.augment_shift, cfg.data.augment_scale, generator)", "tests/training/test_train.py"),
    Bug("KL averaged instead of summed over the latent", "src/fexgan/nets/losses.py",
        "torch.sum(1.0 + log_var - mu.pow(2) - log_var.exp(), dim=1).mean()",
        "torch.mean(1.0 + log_var - mu.pow(2) - log_var.exp())", "tests/training/test_train.py"),
    Bug("ground-truth L1 on [0, 1] pixels", "src/fexgan/metrics/groundtruth.py",
        "l1 = (x - y).abs().mean(dim=(1, 2, 3))", "l1 = ((x - y) / 2).abs().mean(dim=(1, 2, 3))",
        "tests/metrics/test_metrics.py"),
    Bug("confusion matrix transposed", "src/fexgan/metrics/evaluate.py",
        "torch.bincount(target * c + predicted", "torch.bincount(predicted * c + target", "tests/metrics/test_metrics.py"),
    Bug("sharpness of the truth over the image", "src/fexgan/metrics/groundtruth.py",
        "sharpness = gradient_energy(x01) / gradient_energy(y01).clamp(min=1e-6)",
        "sharpness = gradient_energy(y01) / gradient_energy(x01).clamp(min=1e-6)", "tests/metrics/test_metrics.py"),
    Bug("decoder's affect branch halved", "src/fexgan/nets/networks.py",
        "h = torch.cat([self.z_in(z), self.affect_in(affect.to(z.dtype))], dim=1)",
        "h = torch.cat([self.z_in(z), self.affect_in(affect.to(z.dtype) * 0.5)], dim=1)",
        "tests/generation/test_reference_outputs.py::test_the_pinned_model_makes_the_pinned_transfers"),
]


def applies(bug: Bug, root: Path = ROOT) -> str | None:
    """None when `bug` can be planted in the tree at `root` (its text is in its file exactly once), else why not."""
    path = root / bug.file
    if not path.is_file():
        return f"{bug.file} does not exist"
    count = path.read_text().count(bug.old)
    return None if count == 1 else f"its text is in {bug.file} {count} times, not once"


def run_tests(tree: Path, tests: str) -> tuple[bool, float, str, str]:
    """(passed, seconds, pytest's last line, the first failing test or '')."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", tests],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    failed = re.search(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, flags=re.MULTILINE)
    return proc.returncode == 0, time.time() - start, last, failed.group(1) if failed else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the bugs whose name contains this")
    args = parser.parse_args()
    bugs = [b for b in BUGS if not args.only or args.only in b.name]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "fexgan"
        for part in ("src", "tests", "pyproject.toml", "scripts"):
            copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
            copy(ROOT / part, tree / part)
        baseline = {}
        for suite in sorted({b.tests for b in bugs}):
            ok, seconds, last, failed = run_tests(tree, suite)
            baseline[suite] = ok
            print(f"unchanged: {suite} {'passes' if ok else 'FAILS (' + (failed or last) + ')'} ({seconds:.0f} s)",
                  flush=True)
        for bug in bugs:
            record = {**asdict(bug), "status": "", "seconds": 0.0, "pytest": "", "failed": ""}
            why = applies(bug, tree)
            if why:
                record.update(status="not applied", pytest=why)
            elif not baseline[bug.tests]:
                record.update(status="unchecked", pytest=f"{bug.tests} fails on the unchanged copy")
            else:
                path = tree / bug.file
                original = path.read_text()
                path.write_text(original.replace(bug.old, bug.new))
                try:
                    ok, seconds, last, failed = run_tests(tree, bug.tests)
                finally:
                    path.write_text(original)
                record.update(status="missed" if ok else "caught", seconds=round(seconds, 1), pytest=last,
                              failed=failed)
            results.append(record)
            print(f"{record['status'].upper() if record['status'] != 'caught' else 'caught'}: {bug.name} "
                  f"({bug.file}; {record['failed'] or record['pytest']})", flush=True)
    out = ROOT / "runs" / "planted_bugs.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"command": "python benchmarks/planted_bugs.py", "results": results}, indent=2))
    caught = [r for r in results if r["status"] == "caught"]
    others = {r["name"]: r["status"] for r in results if r["status"] != "caught"}
    print(f"{len(caught)} of {len(results)} planted bugs caught" + (f"; not caught: {others}" if others else ""))
    sys.exit(0 if len(caught) == len(results) else 1)


if __name__ == "__main__":
    main()
