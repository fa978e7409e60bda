"""Separability of the toon faces: a small CNN learns expression and character from 200 images
per (character, expression) and is scored on a held-out split (images n > 160 of each pair).

The issue's bar: >= 0.98 expression and >= 0.99 character accuracy.
Reproduce: .venv/bin/python benchmarks/toon_separability.py [--size 64] [--per-class 200]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from fexgan.data import toon
from fexgan.expressions import EXPRESSIONS


def small_cnn(classes: int) -> nn.Module:
    """Four conv blocks (conv, batch norm, ReLU, 2x2 pool), global average pool, one linear layer
    for both heads."""
    layers: list[nn.Module] = []
    for cin, cout in ((3, 24), (24, 48), (48, 64), (64, 96)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, classes))


def as_input(images: np.ndarray) -> torch.Tensor:
    """RGBA uint8 -> RGB over mid grey in [-1, 1], NCHW."""
    x = torch.from_numpy(images).float() / 255
    rgb = x[..., :3] * x[..., 3:] + 0.5 * (1 - x[..., 3:])
    return (rgb * 2 - 1).permute(0, 3, 1, 2).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=200, help="images per (character, expression)")
    parser.add_argument("--characters", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    k, e = args.characters, len(EXPRESSIONS)

    t = time.perf_counter()
    data = toon.render_arrays(per_class=args.per_class, size=args.size, characters=k, seed=args.seed)
    print(f"rendered {len(data.images)} images at {args.size} px in {time.perf_counter() - t:.1f} s")
    n = torch.tensor([r["n"] for r in data.records])
    test = n > round(0.8 * args.per_class)
    train_idx = torch.nonzero(~test).flatten()
    x = as_input(data.images)
    ye, yc = torch.from_numpy(data.expression), torch.from_numpy(data.identity)

    torch.manual_seed(args.seed)
    net = small_cnn(e + k)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = args.epochs * ((len(train_idx) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    t = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        for idx in train_idx[torch.randperm(len(train_idx))].split(64):
            out = net(x[idx])
            loss = nn.functional.cross_entropy(out[:, :e], ye[idx]) + nn.functional.cross_entropy(out[:, e:], yc[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f} ({time.perf_counter() - t:.0f} s)")

    net.eval()
    with torch.no_grad():
        out = torch.cat([net(chunk) for chunk in x[test].split(256)])
    pe, pc = out[:, :e].argmax(1), out[:, e:].argmax(1)
    expr_acc = (pe == ye[test]).float().mean().item()
    char_acc = (pc == yc[test]).float().mean().item()
    confusion = np.zeros((e, e), dtype=int)
    for a, b in zip(ye[test].tolist(), pe.tolist()):
        confusion[a, b] += 1
    print("expression confusion (rows: true, columns: predicted):")
    print("          " + " ".join(f"{c[:6]:>6}" for c in EXPRESSIONS))
    for name, row in zip(EXPRESSIONS, confusion):
        print(f"{name:>9} " + " ".join(f"{v:6d}" for v in row))
    print(f"held-out images: {int(test.sum())} ({args.per_class - round(0.8 * args.per_class)} per pair)")
    print(f"expression accuracy {expr_acc:.4f} (bar 0.98), character accuracy {char_acc:.4f} (bar 0.99)")
    print(f"reproduce: .venv/bin/python benchmarks/toon_separability.py --size {args.size} "
          f"--per-class {args.per_class} --characters {k} --epochs {args.epochs} --seed {args.seed}")


if __name__ == "__main__":
    main()
