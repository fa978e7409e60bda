"""Dataset sources (`TrainConfig.data`), decoded once into a cache:
- `toon` or `toon:PER_CLASS[:CHARACTERS][:jitter]`: the built-in renderer (fexgan.data.toon), rendered once;
  a fixed camera and lighting, as FERG-DB, unless `jitter` asks for pose and lighting jitter.
- `ferg:PATH`: FERG-DB's layout `<char>/<char>_<expr>/*.png`.
- `folder:PATH`: `<identity>/<expression>/*.png|jpg`.
Each is decoded and resized once into a uint8 cache file that is re-used while the sources are
unchanged. Unreadable files are skipped and reported, never silently kept.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fexgan.data.images import IMAGE_SUFFIXES, Background, prepare_image
from fexgan.errors import UserError, warn
from fexgan.expressions import EXPRESSIONS

PREPROCESS_VERSION = 1
# Folder names people use for the seven classes.
ALIASES = {"angry": "anger", "disgusted": "disgust", "fearful": "fear", "afraid": "fear", "happy": "joy",
           "happiness": "joy", "sad": "sadness", "surprised": "surprise"}


# ----------------------------------------------------------------------------- datasets
@dataclass
class ImageSet:
    """A decoded dataset in memory: uint8 images with expression and identity labels."""

    images: torch.Tensor            # (N, 3, S, S) uint8
    expression: torch.Tensor        # (N,) int64, index into `classes`
    identity: torch.Tensor          # (N,) int64, index into `identities`
    identities: list[str]
    classes: tuple[str, ...] = EXPRESSIONS
    names: list[str] = field(default_factory=list)   # relative path (or toon id) of every image
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unreadable files

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __add__(self, other: ImageSet) -> ImageSet:
        """Both sets in one, `other`'s identities after these (same classes and image size)."""
        if other.classes != self.classes or other.images.shape[1:] != self.images.shape[1:]:
            raise UserError("cannot combine data sets of different expressions or image sizes")
        return ImageSet(torch.cat([self.images, other.images]), torch.cat([self.expression, other.expression]),
                        torch.cat([self.identity, other.identity + len(self.identities)]),
                        self.identities + other.identities, self.classes, self.names + other.names,
                        self.skipped + other.skipped)

    def summary(self) -> dict:
        counts = torch.bincount(self.expression, minlength=len(self.classes)).tolist()
        return {"images": len(self), "identities": self.identities, "per_expression": dict(zip(self.classes, counts)),
                "skipped": len(self.skipped)}


def cache_dir() -> Path:
    """Where decoded datasets are cached: $FEXGAN_CACHE or ~/.cache/fexgan."""
    return Path(os.environ.get("FEXGAN_CACHE", Path.home() / ".cache" / "fexgan"))


def parse_source(spec: str) -> tuple[str, str]:
    """'toon', 'toon:200:6', 'ferg:PATH', 'folder:PATH' -> (kind, argument)."""
    kind, _, arg = spec.partition(":")
    if kind not in ("toon", "ferg", "folder"):
        if Path(spec).is_dir():  # a bare folder: guess the layout from its first sub-folder
            return ("ferg", spec) if _looks_like_ferg(Path(spec)) else ("folder", spec)
        raise UserError(f"unknown data source '{spec}'; use toon, toon:PER_CLASS[:CHARACTERS][:jitter], ferg:PATH or folder:PATH")
    return kind, arg


def _looks_like_ferg(root: Path) -> bool:
    for ident in sorted(p for p in root.iterdir() if p.is_dir()):
        return any(d.name.lower().startswith(ident.name.lower() + "_") for d in ident.iterdir() if d.is_dir())
    return False


def _class_of(folder_name: str, classes: Sequence[str]) -> str | None:
    key = folder_name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in classes else None


def scan_folder(root: Path, layout: str, classes: Sequence[str] = EXPRESSIONS) -> list[tuple[Path, str, str]]:
    """List (file, identity, expression) of an image tree; unknown expression folders are an error."""
    if not root.exists():
        raise UserError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise UserError(f"data path {root} is not a folder")
    items, unknown = [], []
    for ident in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for expr_dir in sorted(p for p in ident.iterdir() if p.is_dir() and not p.name.startswith(".")):
            name = expr_dir.name
            if layout == "ferg":  # <char>_<expr>
                name = name[len(ident.name) + 1:] if name.lower().startswith(ident.name.lower() + "_") else name.rsplit("_", 1)[-1]
            expr = _class_of(name, classes)
            if expr is None:
                unknown.append(f"{ident.name}/{expr_dir.name}")
                continue
            for f in sorted(expr_dir.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    items.append((f, ident.name, expr))
    if unknown:
        raise UserError(f"unknown expression folder(s) {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} "
                        f"in {root}; expected names: {', '.join(classes)}")
    if not items:
        want = "<char>/<char>_<expression>/*.png" if layout == "ferg" else "<identity>/<expression>/*.png"
        raise UserError(f"no images found in {root}; expected the layout {want}")
    return items


def _fingerprint(parts: list) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _load_cache(path: Path) -> ImageSet | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return ImageSet(torch.from_numpy(z["images"].copy()), torch.from_numpy(z["expression"].copy()),
                            torch.from_numpy(z["identity"].copy()), meta["identities"], tuple(meta["classes"]),
                            meta["names"], [tuple(s) for s in meta["skipped"]])
    except Exception as err:  # a broken cache is rebuilt, never trusted
        warn(f"ignoring unreadable data cache {path} ({err}); rebuilding it")
        return None


def _save_cache(path: Path, data: ImageSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"identities": data.identities, "classes": list(data.classes), "names": data.names, "skipped": data.skipped}
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    try:
        np.savez(tmp, images=data.images.numpy(), expression=data.expression.numpy(),
                 identity=data.identity.numpy(), meta=np.array(json.dumps(meta)))
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        warn(f"could not write the data cache {path} ({err}); continuing without it")


def _decode_files(items: list[tuple[Path, str, str]], root: Path, size: int, background: Background,
                  classes: Sequence[str]) -> ImageSet:
    identities = sorted({ident for _, ident, _ in items})
    images, exprs, idents, names, skipped = [], [], [], [], []
    for f, ident, expr in items:
        rel = str(f.relative_to(root))
        try:
            images.append(prepare_image(f, size, background))
        except UserError as err:
            skipped.append((rel, str(err)))
            continue
        exprs.append(list(classes).index(expr))
        idents.append(identities.index(ident))
        names.append(rel)
    if not images:
        raise UserError(f"none of the {len(items)} images in {root} could be read (first problem: {skipped[0][1]})")
    arr = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(arr, torch.tensor(exprs), torch.tensor(idents), identities, tuple(classes), names, skipped)


def toon_options(arg: str) -> tuple[int, int, bool]:
    """'PER_CLASS[:CHARACTERS][:jitter]' of a `toon:` source -> (per class, characters, pose/lighting jitter)."""
    fields = [a for a in arg.split(":") if a]
    jitter = bool(fields) and fields[-1] == "jitter"
    fields = fields[:-1] if jitter else fields
    try:
        if len(fields) > 2:
            raise ValueError(arg)
        per_class = int(fields[0]) if fields else 200
        characters = int(fields[1]) if len(fields) > 1 else 6
    except ValueError:
        raise UserError(f"bad toon source 'toon:{arg}'; use toon:PER_CLASS[:CHARACTERS][:jitter], "
                        f"e.g. toon:200:6 or toon:200:6:jitter") from None
    return per_class, characters, jitter


def _render_toon(arg: str, size: int, background: Background) -> ImageSet:
    from fexgan.data import toon

    per_class, characters, jitter = toon_options(arg)
    arrays = toon.render_arrays(per_class=per_class, size=size, characters=characters, seed=0, progress=True,
                                jitter=jitter)
    images = np.stack([prepare_image(Image.fromarray(a, "RGBA"), size, background) for a in arrays.images])
    names = [f"{r['character']}/{EXPRESSIONS[r['expression']] if isinstance(r['expression'], int) else r['expression']}/{r['n']}"
             for r in arrays.records]
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(arrays.expression),
                    torch.from_numpy(arrays.identity), list(arrays.characters), EXPRESSIONS, names, [])


def load_source(spec: str, size: int, background: Background = (255, 255, 255),
                classes: Sequence[str] = EXPRESSIONS, use_cache: bool = True, complete: bool = True) -> ImageSet:
    """Load a data source into memory at `size` px, through the cache when the sources are unchanged;
    `complete`: every expression must have an image (not so for a new character's few images)."""
    kind, arg = parse_source(spec)
    if kind == "toon":
        from fexgan.data import toon

        key = ["toon", toon_options(arg), toon.RENDERER_VERSION]
        items, root = None, None
    else:
        if not arg:
            raise UserError(f"give a folder: {kind}:PATH")
        root = Path(arg).expanduser().resolve()
        items = scan_folder(root, kind, classes)
        stats = [(str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f, _, _ in items]
        key = [kind, str(root), stats]
    key += [size, list(background), list(classes), PREPROCESS_VERSION]
    path = cache_dir() / f"{kind}-{size}-{_fingerprint(key)}.npz"
    data = _load_cache(path) if use_cache and path.exists() else None
    if data is None:
        data = _render_toon(arg, size, background) if kind == "toon" else _decode_files(items, root, size, background, classes)
        if use_cache:
            _save_cache(path, data)
    if complete:
        check_coverage(data)
    return data


def check_coverage(data: ImageSet, minimum: int = 1) -> None:
    """Every expression and every identity needs at least `minimum` images to train on."""
    per_class = torch.bincount(data.expression, minlength=len(data.classes))
    per_ident = torch.bincount(data.identity, minlength=len(data.identities))
    hint = (f" ({len(data.skipped)} unreadable file(s) were skipped, e.g. {data.skipped[0][0]}: {data.skipped[0][1]})"
            if data.skipped else "")
    empty = [f"{c} ({n})" for c, n in zip(data.classes, per_class.tolist()) if n < minimum]
    if empty:
        raise UserError(f"expression(s) {', '.join(empty)} have fewer than {minimum} readable images{hint}; "
                        f"add images or lower min_images_per_class")
    few = [f"{i} ({n})" for i, n in zip(data.identities, per_ident.tolist()) if n < minimum]
    if few:
        raise UserError(f"identity(ies) {', '.join(few)} have fewer than {minimum} readable images{hint}; "
                        f"add images or lower min_images_per_class")


