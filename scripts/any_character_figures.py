"""The README's "your own character" pictures, made from the shipped models.

    .venv/bin/python scripts/any_character_figures.py --out docs/ --minutes 3

1. OUT/any_unseen.png: four toon characters neither model saw (held out of toon-any-64's training,
   not among toon-128's six), each to every expression by toon-128 (the paper's design, which draws
   the nearest character it knows) and by toon-any-64 (the edit design).
2. OUT/any_other_style.png: a face drawn in another style (flat colours, thick outline, dot eyes;
   `other_style_face`), by toon-any-64 as shipped and after `fexgan finetune` on that one image for
   `--minutes` (the fine-tune's run folder is OUT_RUN, default runs/any-other-style).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

import fexgan
from fexgan.data import toon
from fexgan.expressions import EXPRESSIONS
from fexgan.files.checkpoint import read_metadata, resolve_model
from fexgan.metrics.groundtruth import TOON_SEED
from fexgan.training.finetune import finetune

ANY, PAPER = "toon-any-64", "toon-128"
CELL = 96  # every face shown at this side


def unseen_characters(k: int = 4) -> list[toon.Character]:
    """The first `k` characters toon-any-64 held out of its training (toon-128 knows the first six only)."""
    held = read_metadata(resolve_model(ANY))[1]["held_out"]
    everyone = {c.name: c for c in toon.make_characters(toon.MAX_CHARACTERS, seed=TOON_SEED)}
    return [everyone[name] for name in held[:k]]


def other_style_face(size: int = 256) -> Image.Image:
    """A face in a style the renderer never draws: a flat square-ish head with a thick dark outline,
    a fringe of spikes, dot eyes, a triangle nose and a straight mouth, on a transparent background."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d, s, ink = ImageDraw.Draw(img), size / 256, (40, 30, 60, 255)
    d.rounded_rectangle([60 * s, 62 * s, 196 * s, 214 * s], radius=38 * s, fill=(150, 205, 120, 255), outline=ink,
                        width=int(7 * s))
    d.polygon([(p[0] * s, p[1] * s) for p in [(56, 96), (80, 40), (104, 76), (128, 30), (152, 76), (176, 40),
                                              (200, 96), (170, 80), (128, 70), (86, 80)]], fill=(230, 90, 40, 255),
              outline=ink)
    for x in (100, 156):
        d.ellipse([(x - 11) * s, 118 * s, (x + 11) * s, 140 * s], fill=(255, 255, 255, 255), outline=ink, width=int(4 * s))
        d.ellipse([(x - 5) * s, 124 * s, (x + 5) * s, 134 * s], fill=ink)
    d.polygon([(128 * s, 140 * s), (120 * s, 162 * s), (136 * s, 162 * s)], fill=(110, 160, 90, 255), outline=ink)
    d.line([104 * s, 184 * s, 152 * s, 184 * s], fill=ink, width=int(6 * s))
    return img


def row(model: fexgan.FExGAN, face: Image.Image) -> list[Image.Image]:
    """The input and its seven expressions, each at CELL px."""
    return [img.resize((CELL, CELL), Image.LANCZOS) for img in [face, *model.transfer(face, to="all", source="neutral")]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--run", type=Path, default=Path("runs/any-other-style"))
    args = parser.parse_args()
    any_model, paper = fexgan.load(ANY, "cpu", precision="fp32"), fexgan.load(PAPER, "cpu", precision="fp32")
    rows, labels = [], []
    for ch in unseen_characters():
        for name, model in ((PAPER, paper), (ANY, any_model)):
            rows.append(row(model, toon.render_face(ch, "neutral", size=model.config.image_size)))
            labels.append(f"{ch.name}: {name}")
    toon.contact_sheet(rows, labels, ["input", *EXPRESSIONS]).save(args.out / "any_unseen.png")

    face = other_style_face()
    folder = args.run.with_name(args.run.name + "-data")
    (folder / "mine" / "neutral").mkdir(parents=True, exist_ok=True)
    face.save(folder / "mine" / "neutral" / "face.png")
    tuned = fexgan.load(finetune(ANY, f"folder:{folder}", args.run, minutes=args.minutes, progress=False), "cpu",
                        precision="fp32")
    sheet = toon.contact_sheet([row(any_model, face), row(tuned, face)],
                               [f"{ANY} as shipped", f"after finetune ({args.minutes:g} min, this one image)"],
                               ["input", *EXPRESSIONS])
    sheet.save(args.out / "any_other_style.png")
    print(f"wrote {args.out / 'any_unseen.png'} and {args.out / 'any_other_style.png'} (fine-tune: {args.run})")


if __name__ == "__main__":
    main()
