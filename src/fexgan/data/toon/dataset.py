"""Datasets: render many faces (in memory or to a FERG-DB-style folder) on a process pool."""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fexgan.data.toon.characters import Character, make_characters
from fexgan.data.toon.controls import _POINTS, CONTROLS
from fexgan.data.toon.faces import _render
from fexgan.data.toon.limits import MAX_CHARACTERS, _check_count, _check_size
from fexgan.data.toon.variation import variation_for
from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS

RENDERER_VERSION = 3
"""Bumped whenever the same arguments would render different pixels (data caches key on it).
Version 3: a fixed camera and fixed lighting by default (pose and lighting jitter only on request)."""


@dataclass
class ToonArrays:
    """Rendered faces in memory, in the order character > expression > n, with ground truth."""

    images: np.ndarray        # (N, S, S, 4) uint8 RGBA
    expression: np.ndarray    # (N,) int64, index into EXPRESSIONS
    identity: np.ndarray      # (N,) int64, index into characters
    characters: list[str]
    records: list[dict[str, Any]]


Job = tuple[int, int, int]  # (character index, expression index, n from 1)


def _render_jobs(chars: list[Character], jobs: list[Job], seed: int, size: int, jitter: bool,
                 out: Path | None) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
    """Render a chunk of dataset images (in a worker): save them under ``out``, or return them."""
    images, records = [], []
    for ci, ei, n in jobs:
        ch, expr = chars[ci], EXPRESSIONS[ei]
        v = variation_for(seed, ci, ei, n, jitter)
        img = _render(ch, _POINTS[ei], v, size)
        rec: dict[str, Any] = {
            "character": ch.name, "expression": expr, "n": n,
            "affect": np.eye(len(EXPRESSIONS))[ei].tolist(),
            "controls": {c: round(float(x), 4) for c, x in zip(CONTROLS, _POINTS[ei] * v.intensity)},
            "variation": asdict(v),
        }
        if out is None:
            images.append(img)
        else:
            rel = f"{ch.name}/{ch.name}_{expr}/{ch.name}_{expr}_{n}.png"
            Image.fromarray(img, "RGBA").save(out / rel, format="PNG")
            rec = {"path": rel, **rec}
        records.append(rec)
    return (np.stack(images) if images else None), records


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run(chars: list[Character], per_class: int, seed: int, size: int, jitter: bool, workers: int | None,
         progress: bool, out: Path | None) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Render every (character, expression, n), in order, on ``workers`` processes."""
    jobs = [(ci, ei, n) for ci in range(len(chars)) for ei in range(len(EXPRESSIONS))
            for n in range(1, per_class + 1)]
    workers = workers or _default_workers()
    if len(jobs) < 128:  # a pool costs more than it saves
        workers = 1
    step = int(np.clip(len(jobs) // (workers * 8), 1, 64))
    chunks = [jobs[i:i + step] for i in range(0, len(jobs), step)]
    images: list[np.ndarray] = []
    records: list[dict[str, Any]] = []
    bar = None
    if progress:
        from rich.console import Console
        from rich.progress import Progress

        bar = Progress(console=Console(stderr=True))
        task = bar.add_task(f"rendering {len(jobs)} toon faces", total=len(jobs))
        bar.start()
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        n = len(chunks)
        args = ([chars] * n, chunks, [seed] * n, [size] * n, [jitter] * n, [out] * n)
        results = pool.map(_render_jobs, *args) if pool else map(_render_jobs, *args)
        for chunk, (imgs, recs) in zip(chunks, results):
            if imgs is not None:
                images.append(imgs)
            records.extend(recs)
            if bar is not None:
                bar.advance(task, len(chunk))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.stop()
    return images, records


def _check_dataset_args(per_class: int, size: int, characters: int, workers: int | None) -> None:
    _check_count("per-class (images per character and expression)", per_class)
    _check_size(size)
    _check_count("characters", characters, MAX_CHARACTERS)
    if workers is not None:
        _check_count("workers", workers)


def render_arrays(per_class: int = 200, size: int = 128, characters: int = 6, seed: int = 0,
                  workers: int | None = None, progress: bool = False, jitter: bool = False) -> ToonArrays:
    """Render the dataset into memory: ``per_class`` images per (character, expression); ``jitter``
    as in ``sample_variation``."""
    _check_dataset_args(per_class, size, characters, workers)
    chars = make_characters(characters, seed)
    images, records = _run(chars, per_class, seed, size, jitter, workers, progress, None)
    names = [c.name for c in chars]
    return ToonArrays(
        images=np.concatenate(images),
        expression=np.array([EXPRESSIONS.index(r["expression"]) for r in records], dtype=np.int64),
        identity=np.array([names.index(r["character"]) for r in records], dtype=np.int64),
        characters=names, records=records)


def render_dataset(out: Path, per_class: int = 200, size: int = 128, characters: int = 6,
                   seed: int = 0, workers: int | None = None, progress: bool = True,
                   jitter: bool = False) -> Path:
    """Write the dataset in FERG-DB's layout plus ``manifest.json``; returns the manifest path.

    Layout: ``<out>/<char>/<char>_<expr>/<char>_<expr>_<n>.png`` with n from 1. The manifest
    lists every image's relative path and ground truth (character, expression, n, affect,
    controls, variation). The same arguments give byte-identical files.
    """
    _check_dataset_args(per_class, size, characters, workers)
    out = Path(out)
    chars = make_characters(characters, seed)
    try:
        for ch in chars:
            for expr in EXPRESSIONS:
                (out / ch.name / f"{ch.name}_{expr}").mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError(13, "permission denied")
    except OSError as err:
        raise UserError(f"cannot write to output folder {out}: {err.strerror or err}") from None
    _, records = _run(chars, per_class, seed, size, jitter, workers, progress, out)
    header = {"dataset": "fexgan-toon", "version": 1, "renderer_version": RENDERER_VERSION, "size": size,
              "per_class": per_class, "seed": seed, "camera": "jitter" if jitter else "fixed", "expressions": list(EXPRESSIONS), "characters": [c.name for c in chars],
              "character_styles": [asdict(c) for c in chars]}
    text = json.dumps(header)[:-1] + ',\n"images": [\n' \
        + ",\n".join(json.dumps(r) for r in records) + "\n]}\n"
    path = out / "manifest.json"
    try:
        path.write_text(text)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    return path
