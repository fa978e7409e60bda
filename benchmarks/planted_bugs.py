"""Planted bugs: each one, alone, in a copy of the source, must make the test suite fail.

For every bug below the script copies `src/` and `tests/` into a temporary folder, makes the one
edit, and runs the tests that should catch it there (`PYTHONPATH` puts the copy first, so `fexgan`
and the `fexgan` command both run the planted code). A bug is caught when those tests fail; the
run also checks that the same tests pass on the unchanged copy, so a failure means the bug.

    .venv/bin/python benchmarks/planted_bugs.py [--only NAME]

Writes runs/planted_bugs.json and prints one line per bug.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, file, text, replacement, tests that must catch it)
BUGS = [
    # the four of the issue "A test suite that catches wrong numbers"
    ("sampling forgets the mean", "src/fexgan/models.py", "return mu + torch.exp(log_sigma) * eps",
     "return torch.exp(log_sigma) * eps", "tests/test_models.py"),
    ("real term classified against the target", "src/fexgan/train.py",
     'discriminator_loss(real_logit, real_cls, batch["source_class"]',
     'discriminator_loss(real_logit, real_cls, batch["target_class"]', "tests/test_train.py"),
    ("no adversarial gradient reaches G", "src/fexgan/train.py", "fake_logit, fake_cls = ckpt.unwrap(D)(fake)",
     "fake_logit, fake_cls = ckpt.unwrap(D)(fake.detach())", "tests/test_train.py"),
    ("late schedule never reaches the loss", "src/fexgan/train.py",
     "losses = tuner(train_step, nets, batch, cfg, cfg.alpha_late if late else cfg.alpha,",
     "losses = tuner(train_step, nets, batch, cfg, cfg.alpha,", "tests/test_train.py"),
    # planted here, of the same kinds
    ("both ranks read the same shard", "src/fexgan/data.py",
     "mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)",
     "mine = slice(0, self.batch_size)", "tests/test_data.py"),
    ("only the source is augmented", "src/fexgan/train.py",
     "source, target = augment(torch.cat([source, target], 1), cfg.augment_shift, cfg.augment_scale,\n"
     "                                 generator).split(3, dim=1)",
     "source = augment(source, cfg.augment_shift, cfg.augment_scale, generator)", "tests/test_train.py"),
    ("KL averaged instead of summed over the latent", "src/fexgan/losses.py",
     "torch.sum(1.0 + log_var - mu.pow(2) - log_var.exp(), dim=1).mean()",
     "torch.mean(1.0 + log_var - mu.pow(2) - log_var.exp())", "tests/test_train.py"),
    ("ground-truth L1 on [0, 1] pixels", "src/fexgan/metrics/groundtruth.py",
     "l1 = (x - y).abs().mean(dim=(1, 2, 3))", "l1 = ((x - y) / 2).abs().mean(dim=(1, 2, 3))",
     "tests/test_metrics.py"),
    ("confusion matrix transposed", "src/fexgan/metrics/evaluate.py",
     "torch.bincount(target * c + predicted", "torch.bincount(predicted * c + target", "tests/test_metrics.py"),
    ("sharpness of the truth over the image", "src/fexgan/metrics/groundtruth.py",
     "sharpness = gradient_energy(x01) / gradient_energy(y01).clamp(min=1e-6)",
     "sharpness = gradient_energy(y01) / gradient_energy(x01).clamp(min=1e-6)", "tests/test_metrics.py"),
    ("decoder's affect branch halved", "src/fexgan/models.py",
     "h = torch.cat([self.z_in(z), self.affect_in(affect.to(z.dtype))], dim=1)",
     "h = torch.cat([self.z_in(z), self.affect_in(affect.to(z.dtype) * 0.5)], dim=1)",
     "tests/test_reference_outputs.py"),
]


def run_tests(tree: Path, tests: str) -> tuple[bool, float, str]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", tests],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return proc.returncode == 0, time.time() - start, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the bugs whose name contains this")
    args = parser.parse_args()
    bugs = [b for b in BUGS if not args.only or args.only in b[0]]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "fexgan"
        for part in ("src", "tests", "pyproject.toml", "scripts"):
            copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
            copy(ROOT / part, tree / part)
        for suite in sorted({b[4] for b in bugs}):
            ok, seconds, last = run_tests(tree, suite)
            if not ok:
                sys.exit(f"{suite} fails on the unchanged copy ({last}); fix that first")
            print(f"unchanged: {suite} passes ({seconds:.0f} s)")
        for name, file, text, replacement, suite in bugs:
            path = tree / file
            original = path.read_text()
            if original.count(text) != 1:
                sys.exit(f"'{name}': the text to replace is not in {file} exactly once; update this script")
            path.write_text(original.replace(text, replacement))
            try:
                ok, seconds, last = run_tests(tree, suite)
            finally:
                path.write_text(original)
            results.append({"bug": name, "file": file, "tests": suite, "caught": not ok, "seconds": round(seconds, 1),
                            "pytest": last})
            print(f"{'caught' if not ok else 'MISSED'}: {name} ({suite}: {last})")
    out = ROOT / "runs" / "planted_bugs.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"command": "python benchmarks/planted_bugs.py", "results": results}, indent=2))
    missed = [r["bug"] for r in results if not r["caught"]]
    print(f"{len(results) - len(missed)} of {len(results)} planted bugs caught" + (f"; missed: {missed}" if missed else ""))


if __name__ == "__main__":
    main()
