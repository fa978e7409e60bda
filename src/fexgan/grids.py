"""Labelled image grids and loss plots: what training, figures and the data commands draw."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def image_grid(rows: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, title: str | None = None, pad: int = 4,
               background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Paste images (RGB, or RGBA composited over `background`) into a grid of equal cells, with
    optional row/column labels and a title; `None` leaves a cell empty."""
    sizes = [img.size for row in rows for img in row if img is not None] or [(64, 64)]
    cell_w, cell_h = max(w for w, _ in sizes), max(h for _, h in sizes)
    n_cols = max(len(r) for r in rows)
    font_size = max(10, min(18, cell_h // 6))
    font = _font(font_size)
    left = (max(int(font.getlength(s)) for s in row_labels) + 2 * pad) if row_labels else 0
    top = (font_size + 2 * pad if col_labels else 0) + (font_size + 2 * pad if title else 0)
    sheet = Image.new("RGB", (left + n_cols * (cell_w + pad) + pad, top + len(rows) * (cell_h + pad) + pad), background)
    draw = ImageDraw.Draw(sheet)
    y0 = pad
    if title:
        draw.text((pad, y0), title, fill=(0, 0, 0), font=font)
        y0 += font_size + 2 * pad
    if col_labels:
        for c, label in enumerate(col_labels):
            x = left + pad + c * (cell_w + pad) + (cell_w - font.getlength(label)) / 2
            draw.text((x, y0), label, fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        y = top + pad + r * (cell_h + pad)
        if row_labels:
            draw.text((pad, y + (cell_h - font_size) / 2), row_labels[r], fill=(0, 0, 0), font=font)
        for c, img in enumerate(row):
            if img is not None:
                tile = img if img.mode == "RGB" else _flatten(img, background)
                sheet.paste(tile, (left + pad + c * (cell_w + pad) + (cell_w - tile.width) // 2,
                                   y + (cell_h - tile.height) // 2))
    return sheet


def _flatten(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    base = Image.new("RGBA", img.size, background + (255,))
    base.alpha_composite(img.convert("RGBA"))
    return base.convert("RGB")


def plot_losses(log_file: Path, out: Path) -> None:
    """Loss curves from a run's log.jsonl, one panel per loss group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_file).read_text().splitlines() if line.strip()]
    records = [r for r in records if "step" in r and "rec" in r]
    if not records:
        return
    panels = [("discriminator", ["d_real", "d_fake"]), ("generator adversarial", ["g_adv", "g_cls"]),
              ("reconstruction (L1)", ["rec"]), ("KL", ["kl"])]
    if any("val_psnr" in r for r in records):
        panels.append(("validation PSNR vs truth (dB)", ["val_psnr", "val_psnr_copy"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (name, keys) in zip(axes, panels):
        for k in keys:
            points = [(r.get("val_step", r["step"]) if k.startswith("val") else r["step"], r[k])
                      for r in records if k in r]
            ax.plot(*zip(*points), label=k, linewidth=1)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
