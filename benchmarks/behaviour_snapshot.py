"""A snapshot of behaviour to compare two commits: the first 50 steps of a seeded tiny run (every
logged loss and validation value) and the shipped toon-128's transfers and samples.

    git checkout A && .venv/bin/python benchmarks/behaviour_snapshot.py /tmp/a.pt
    git checkout B && .venv/bin/python benchmarks/behaviour_snapshot.py /tmp/b.pt --compare /tmp/a.pt
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import fexgan
from fexgan.data import toon
from fexgan.presets import build_config
from fexgan.training.loop import train


def snapshot() -> dict:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        cfg = build_config("tiny", overrides=["run.device=cpu", "run.threads=1", "run.steps=50", "logging.checkpoint_every=20",
                                              "logging.sample_every=25"])
        train(cfg, Path(d) / "run", progress=False)
        logs = [json.loads(line) for line in (Path(d) / "run" / "log.jsonl").read_text().splitlines()]
    model = fexgan.load("toon-128", device="cpu", precision="fp32")
    faces = [toon.render_face(c, "neutral", size=128) for c in toon.make_characters(6)]
    return {"losses": [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in logs],
            "transfer": model.transfer_tensor(model.prepare(faces), torch.eye(7), source="neutral"),
            "sample": model.sample_tensor("joy", n=4, seed=3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--compare", help="an earlier snapshot to compare with")
    args = parser.parse_args()
    snap = snapshot()
    torch.save(snap, args.out)
    if args.compare:
        old = torch.load(args.compare)
        common = [{k: v for k, v in new.items() if k in before} for before, new in zip(old["losses"], snap["losses"])]
        added = sorted({k for r in snap["losses"] for k in r} - {k for r in old["losses"] for k in r})
        print("losses identical:", len(old["losses"]) == len(snap["losses"]) and old["losses"] == common,
              f"(values logged only now: {', '.join(added) or 'none'})")
        for key in ("transfer", "sample"):
            print(f"{key} identical:", torch.equal(old[key], snap[key]),
                  f"(largest difference {float((old[key] - snap[key]).abs().max()):.3g})")


if __name__ == "__main__":
    main()
