"""docs/toon_variation.png: one character's dataset images, every expression, as the `toon` source
draws them (fixed camera and light) and with `toon:...:jitter` (pose and lighting jitter).

    .venv/bin/python scripts/toon_variation.py [--out docs/toon_variation.png] [--character 0] [--n 6]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fexgan.data import toon
from fexgan.expressions import EXPRESSIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/toon_variation.png"))
    parser.add_argument("--character", type=int, default=0)
    parser.add_argument("--n", type=int, default=6, help="dataset images per expression and setting")
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    ch = toon.make_characters(args.character + 1)[args.character]
    rows, labels = [], []
    for jitter in (False, True):
        for e, expr in enumerate(EXPRESSIONS):
            rows.append([toon.render_face(ch, expr, toon.variation_for(0, args.character, e, n, jitter), args.size)
                         for n in range(1, args.n + 1)])
            labels.append(f"{expr}{' (jitter)' if jitter else ''}")
    toon.contact_sheet(rows, labels, [f"n={n}" for n in range(1, args.n + 1)]).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
