"""Generation with a trained FExGAN: sample, classify, encode, transfer, mix and morph expressions
(the files the commands write: `fexgan.generation.outputs`; the paper's figures: `fexgan.generation.figures`).

    model = fexgan.load("runs/demo")               # run folder, model file or shipped model name
    joy = model.transfer("face.png", to="joy")     # PIL in, PIL out
    strip = model.transfer("face.png", to="all")   # one image per expression
    both = model.mix("face.png", "anger=0.5,sadness=0.5")
    frames = model.morph("face.png", ["neutral", "joy", "surprise"], frames=36, loop=True, size=256)
    Path("anim.webp").write_bytes(animation_bytes(frames, "webp", fps=12))   # fexgan.generation.animation

Images go in as PIL images, paths or bytes (any size and mode, through `fexgan.data.images.prepare_image`);
a single image gives a single result and a sequence gives a list. Outputs are the model's size, or
`size` px square, or each input's size with `keep_size`; an input with transparency gives RGBA
outputs with its silhouette as their matte (`matte`, see `fexgan.generation.matte`). The `*_tensor` methods
take and return batches in [-1, 1] on the model's device. Encodings use the latent mean unless
`sample_latent=True`; everything random is drawn from a `torch.Generator` seeded by `seed`, on the
CPU, so results are the same for a seed on any device.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fexgan.data.images import check_image_size, from_pil, open_image, to_pil
from fexgan.devices import inference_precision, pick_device
from fexgan.errors import UserError
from fexgan.expressions import parse_affect
from fexgan.files.checkpoint import LoadedModel, load_model, resolve_model
from fexgan.generation.driver import Driver
from fexgan.generation.matte import check_matte, check_size, finish, finish_between

ImageInput = Union[Image.Image, str, Path, bytes]
# An affect: an expression name, 'anger=0.5,sadness=0.5', {'anger': 0.5, ...}, a class index or a vector.
Affect = Union[str, Mapping[str, float], int, Sequence[float], torch.Tensor, np.ndarray]

BATCH = 64          # images per forward pass
FAR = 0.12          # `distance_tensor` above this: a face unlike every character the model knows (uncalibrated)
RECOGNISED = 0.55   # `recognised_tensor` below this: the model cannot draw expressions on the face
MAX_SAMPLES = 1024  # limits that keep a typo from asking for hours of work
MAX_FRAMES = 1000
MAX_SEED = 2**63 - 1
MAX_OUTPUT_PIXELS = 128 * 2**20  # images x side^2 of one sample or morph call (about 12 bytes each at the peak)


def affect_name(vector: torch.Tensor, classes: Sequence[str]) -> str:
    """'joy' for a one-hot vector, else 'anger0.5+sadness0.5': a label that also works as a file name."""
    weights = [(c, float(w)) for c, w in zip(classes, vector.tolist()) if abs(w) > 1e-6]
    if len(weights) == 1 and abs(weights[0][1] - 1.0) < 1e-6:
        return weights[0][0]
    return "+".join(f"{c}{w:g}" for c, w in weights) or "zero"


def ease(t: torch.Tensor) -> torch.Tensor:
    """Cosine ease-in-out on [0, 1]: frames linger at the key expressions and move smoothly between."""
    return (1 - torch.cos(math.pi * t)) / 2


def check_range(name: str, value: int, low: int, high: int) -> int:
    """`value`, or a UserError naming `name` and the range it must be in."""
    if not low <= value <= high:
        raise UserError(f"{name} must be between {low} and {high}, got {value}")
    return value


def check_output(count: int, side: int, what: str) -> None:
    """Refuse `count` outputs of `side` px when they exceed MAX_OUTPUT_PIXELS (before any work)."""
    pixels = count * side * side
    if pixels > MAX_OUTPUT_PIXELS:
        raise UserError(f"{count} {what} of {side} px are {pixels / 2**20:,.0f} megapixels; the limit is "
                        f"{MAX_OUTPUT_PIXELS / 2**20:,.0f}: ask for fewer {what} or a smaller --size")


def generator_of(seed: int) -> torch.Generator:
    """A CPU generator seeded by `seed` (0 .. 2^63 - 1), so that a seed gives the same draw on any device."""
    return torch.Generator().manual_seed(check_range("seed", seed, 0, MAX_SEED))


class FExGAN:
    """A trained FExGAN ready to generate: generator, discriminator (None in a generator-only file),
    configuration and training summary, on one device, in eval mode."""

    def __init__(self, loaded: LoadedModel, device: torch.device, path: Path | None = None, precision: str = "auto"):
        self.generator = loaded.generator.to(device).eval()
        self.discriminator = loaded.discriminator.to(device).eval() if loaded.discriminator is not None else None
        self.config = loaded.config
        self.summary = loaded.summary
        self.device = device
        self.path = path
        self.precision = inference_precision(precision, device)
        self.driver = Driver(self.generator, device, bf16=self.precision == "bf16", batch=BATCH)

    @classmethod
    def load(cls, model: str | Path, device: str = "auto", precision: str = "auto") -> FExGAN:
        """Load a run folder, a model file or a shipped model name onto `device` (auto | cpu | cuda);
        `precision` auto: bf16 autocast where the device has native bf16 (within 1/255 of fp32 on 99 %
        of pixels, 1.6x faster on this project's CPU: docs/speed.md), else fp32."""
        dev = pick_device(device)
        path = resolve_model(model)
        return cls(load_model(path, dev), dev, path, precision)

    def __repr__(self) -> str:
        c = self.config
        return (f"FExGAN({self.path}, {c.generator} design, {c.image_size}px, width {c.width}, classes "
                f"{', '.join(c.classes)}, device {self.device}, {self.precision})")

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    # ------------------------------------------------------------------------- inputs
    def affect(self, spec: Affect) -> torch.Tensor:
        """One affect vector (classes,) from a name, 'anger=0.5,sadness=0.5', a dict, an index or a vector."""
        n = len(self.classes)
        if isinstance(spec, str):
            return self._check_weights(parse_affect(_one_affect(spec), self.classes))
        if isinstance(spec, Mapping):
            return self._check_weights(parse_affect(",".join(f"{k}={v}" for k, v in spec.items()), self.classes))
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            if not 0 <= spec < n:
                raise UserError(f"expression index {spec} is out of range 0..{n - 1}")
            return F.one_hot(torch.tensor(int(spec)), n).float()
        try:
            vec = torch.as_tensor(np.asarray(spec, dtype=np.float32))
        except (TypeError, ValueError):
            raise UserError(f"cannot read {spec!r} as an affect; give a name, 'anger=0.5,sadness=0.5', "
                            f"a dict or {n} numbers") from None
        if vec.shape != (n,):
            raise UserError(f"an affect vector needs {n} numbers ({', '.join(self.classes)}), got shape {tuple(vec.shape)}")
        if not bool(torch.isfinite(vec).all()):
            raise UserError("affect vector has non-finite values")
        return self._check_weights(vec)

    def _check_weights(self, vec: torch.Tensor) -> torch.Tensor:
        """Weights are 0 (absent) to 1 (full; more exaggerates); negative or all-zero ones mean nothing."""
        negative = [f"{c}={w:g}" for c, w in zip(self.classes, vec.tolist()) if w < 0]
        if negative:
            raise UserError(f"affect weight {', '.join(negative)} is negative; weights run from 0 (absent) to 1 "
                            f"(full), e.g. anger=0.5,sadness=0.5")
        if not bool((vec > 0).any()):
            raise UserError("the affect has no weight above 0; give at least one expression, e.g. joy or "
                            "joy=0.5,surprise=0.5")
        return vec

    def targets(self, to: Affect | Sequence[Affect]) -> tuple[torch.Tensor, list[str], bool]:
        """(affects (T, classes), labels, several?) for `to`: 'all', one affect, or a list of affects."""
        if isinstance(to, str) and to.strip().lower() == "all":
            return torch.eye(len(self.classes)), list(self.classes), True
        several = (isinstance(to, (list, tuple)) and len(to) > 0 and not isinstance(to[0], numbers.Number)) or \
                  (isinstance(to, (torch.Tensor, np.ndarray)) and to.ndim == 2)
        vectors = torch.stack([self.affect(t) for t in to]) if several else self.affect(to)[None]
        return vectors, [affect_name(v, self.classes) for v in vectors], several

    def _open(self, images: ImageInput | Sequence[ImageInput]) -> tuple[list[Image.Image], bool]:
        """Decoded RGBA images (each checked to be large enough) and whether a single one was given."""
        single = isinstance(images, (Image.Image, str, Path, bytes))
        items = [images] if single else list(images)
        if not items:
            raise UserError("no images given")
        return [check_image_size(open_image(im)) for im in items], single

    def _finish(self, faces: torch.Tensor, original: Image.Image | None, matte: str, size: int | None,
                keep_size: bool = False) -> list[Image.Image]:
        """Model outputs (N, 3, S, S) of one input -> PIL images of the asked size and matte."""
        return finish(to_pil(faces), original, self.config.background, matte, size, keep_size)

    def prepare(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """Images -> model input (B, 3, S, S) in [-1, 1] on the model's device."""
        pils, _ = self._open(images)
        return from_pil(pils, self.config.image_size, self.config.background).to(self.device)

    def _source(self, x: torch.Tensor, source: Affect | torch.Tensor | None) -> torch.Tensor:
        """Source affects (B, classes): the given one for all images (or one per image, as a (B, classes)
        tensor), or the classifier's prediction."""
        if isinstance(source, torch.Tensor) and source.shape == (len(x), len(self.classes)):
            return source.to(self.device)
        if source is not None:
            return self.affect(source).to(self.device).expand(len(x), -1)
        if self.discriminator is None:
            raise UserError("this model file has no discriminator to recognise the source expression; "
                            "give it (--from EXPRESSION / source=...)")
        predicted = self.classify_tensor(x).argmax(1)
        return F.one_hot(predicted, len(self.classes)).float()

    # ------------------------------------------------------------------------- tensor API
    @torch.inference_mode()
    def classify_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Expression probabilities (B, classes) from the discriminator's auxiliary classifier."""
        if self.discriminator is None:
            raise UserError("this model file has no discriminator, so it cannot classify expressions")
        with self._autocast():
            return torch.cat([self.discriminator(b.to(self.device))[1].float().softmax(1) for b in x.split(BATCH)])

    @torch.inference_mode()
    def encode_tensor(self, x: torch.Tensor, source: Affect | None = None, sample_latent: bool = False,
                      seed: int = 0) -> torch.Tensor:
        """Latents (B, latent_dim): the mean, or a draw from N(mu, sigma) with `sample_latent`."""
        x = x.to(self.device)
        mu, log_sigma = self.driver.encode(x, self._source(x, source))
        if not sample_latent:
            return mu
        eps = torch.randn(mu.shape, generator=generator_of(seed)).to(self.device)
        return mu + log_sigma.exp() * eps

    @torch.inference_mode()
    def decode_tensor(self, z: torch.Tensor, affect: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, 3, S, S) in [-1, 1] from latents (B, latent_dim) and affects (B, classes); `source`
        (B, 3, S, S): the images being edited, None for the decoder drawing alone."""
        return self.driver.decode(z.to(self.device), affect.to(self.device), source)

    @property
    def far(self) -> float:
        """The `distance_tensor` above which a face is unlike every character the model knows: the
        model's own calibration (its summary's `far`, the 99th percentile over its validation images,
        written at the end of training: `snapshots.far_threshold`) or, for older files, `FAR`."""
        return float(self.summary.get("far", FAR))  # (designs that redraw the face: `familiarity_tensor`)

    def distance_tensor(self, x: torch.Tensor, source: Affect | None = None) -> torch.Tensor:
        """How far each face (B,) is from the characters the model knows: the mean absolute difference
        (pixels in [-1, 1]) between the face and what the decoder draws alone from its latent. toon-128
        scores 0.014-0.025 on its six characters, 0.21-0.48 on six toon characters it never saw and
        0.82 on noise; above `far` the model has not seen the like (`fexgan finetune` adapts it). The
        edit design's decoder draws alone less closely (toon-any-64: 0.18-0.42 on toon faces, which it
        edits well), so its `familiarity_tensor` does not go by it."""
        x = x.to(self.device)
        src = self._source(x, source)  # once: with no source given, it is the classifier's reading
        drawn = self.decode_tensor(self.encode_tensor(x, src), src)
        return (drawn - x).abs().flatten(1).mean(1)

    def recognised_tensor(self, x: torch.Tensor, source: Affect | None = None) -> torch.Tensor:
        """How surely the model's own classifier reads its edits of each face (B,): the mean, over every
        expression, of the probability it gives the face edited to that expression of showing it.
        toon-any-64 (its discriminator trained on views, `d_augment`): 0.72-1.00 on toon faces, seen or
        not (the neutral, joy and sadness faces of all 256 characters); 0.15 on a face in another style,
        0.39 on a grey square, 0.14 on a smiley and 0.27 on noise: below `RECOGNISED` the model cannot
        draw expressions on the face."""
        x = x.to(self.device)
        src = self._source(x, source)
        n = len(self.classes)
        edits = self.transfer_tensor(x, torch.eye(n), src)
        return self.classify_tensor(edits.flatten(0, 1)).view(len(x), n, n).diagonal(dim1=1, dim2=2).mean(1)

    def familiarity_tensor(self, x: torch.Tensor, source: Affect | None = None) -> dict[str, torch.Tensor]:
        """How well the model knows each face (B,): its `distance_tensor`, its `recognised_tensor` (models
        with a discriminator) and `far`: the decoder cannot redraw the face (distance above `far`), for
        the paper's design, which redraws every face and would draw another; or the model's classifier
        cannot read its own edits of it (below `RECOGNISED`: a face in another drawing style)."""
        x = x.to(self.device)
        src = self._source(x, source)
        out = {"distance": self.distance_tensor(x, src)}
        out["far"] = out["distance"] > self.far if self.generator.redraws else torch.zeros(len(x), dtype=torch.bool)
        if self.discriminator is not None:
            out["recognised"] = self.recognised_tensor(x, src)
            out["far"] |= out["recognised"] < RECOGNISED
        return out

    def sample_tensor(self, expression: Affect = "joy", n: int = 16, seed: int = 0) -> torch.Tensor:
        """The decoder alone from z ~ N(0, I) (paper Fig. 4): (n, 3, S, S)."""
        check_range("the number of samples", n, 1, MAX_SAMPLES)
        z = torch.randn(n, self.config.latent_dim, generator=generator_of(seed))
        return self.decode_tensor(z, self.affect(expression)[None])

    def transfer_tensor(self, x: torch.Tensor, targets: torch.Tensor, source: Affect | None = None,
                        sample_latent: bool = False, seed: int = 0) -> torch.Tensor:
        """Every image to every target affect (T, classes): (B, T, 3, S, S)."""
        z = self.encode_tensor(x, source, sample_latent, seed)
        b, t = len(z), len(targets)
        out = self.decode_tensor(z.repeat_interleave(t, 0), targets.to(self.device).repeat(b, 1),
                                 x.to(self.device).repeat_interleave(t, 0))
        return out.view(b, t, *out.shape[1:])

    # ------------------------------------------------------------------------- PIL API
    def sample(self, expression: Affect = "joy", n: int = 16, seed: int = 0, size: int | None = None,
               matte: str = "none") -> list[Image.Image] | list[list[Image.Image]]:
        """n faces of an expression drawn by the decoder alone; 'all' gives one list per expression,
        column j using the same latent in every list. `matte="key"` cuts them out of the background."""
        check_matte(matte, has_input=False)
        check_size(size)
        vectors, _, several = self.targets(expression)
        check_range("the number of samples", n, 1, MAX_SAMPLES)
        check_output(n * len(vectors), size or self.config.image_size, "faces")
        generator_of(seed)
        rows = [self._finish(self.sample_tensor(v, n, seed), None, matte, size) for v in vectors]
        return rows if several else rows[0]

    def classify(self, images: ImageInput | Sequence[ImageInput]) -> dict[str, float] | list[dict[str, float]]:
        """Expression probabilities {name: p} per image, from the discriminator's classifier."""
        pils, single = self._open(images)
        probs = self.classify_tensor(self.prepare(pils)).cpu()
        out = [dict(zip(self.classes, p.tolist())) for p in probs]
        return out[0] if single else out

    def encode(self, images: ImageInput | Sequence[ImageInput], source: Affect | None = None,
               sample_latent: bool = False, seed: int = 0) -> torch.Tensor:
        """Latent of each image given its source expression (predicted when None): (latent_dim,) or (B, latent_dim)."""
        pils, single = self._open(images)
        z = self.encode_tensor(self.prepare(pils), source, sample_latent, seed)
        return z[0] if single else z

    def transfer(self, images: ImageInput | Sequence[ImageInput], to: Affect | Sequence[Affect] = "joy",
                 source: Affect | None = None, keep_size: bool = False, sample_latent: bool = False,
                 seed: int = 0, size: int | None = None, matte: str = "auto") -> Any:
        """Re-draw faces with another expression. `to` is one affect (-> one image per input) or 'all'
        / a list (-> a list per input). `keep_size` gives each output its input's size and aspect,
        `size` a square of that side; `matte` (auto | input | outline | key | none) its alpha."""
        check_matte(matte)
        check_size(size, keep_size)
        pils, single = self._open(images)
        vectors, _, several = self.targets(to)
        out = self.transfer_tensor(self.prepare(pils), vectors, source, sample_latent, seed)
        results = []
        for original, faces in zip(pils, out):
            imgs = self._finish(faces, original, matte, size, keep_size)
            results.append(imgs if several else imgs[0])
        return results[0] if single else results

    def mix(self, image: ImageInput, affect: Affect, source: Affect | None = None, keep_size: bool = False,
            size: int | None = None, matte: str = "auto") -> Image.Image:
        """One face with any affect vector, e.g. 'anger=0.5,sadness=0.5' (paper Fig. 6)."""
        return self.transfer(image, self.affect(affect), source, keep_size, size=size, matte=matte)

    @torch.inference_mode()
    def morph(self, image: ImageInput, path: Sequence[Affect] = ("neutral", "joy"), frames: int = 24,
              loop: bool = False, source: Affect | None = None, face_b: ImageInput | None = None,
              source_b: Affect | None = None, size: int | None = None, matte: str = "auto") -> list[Image.Image]:
        """Frames moving smoothly through affect space along `path` (names or affects). With `loop` the
        path returns to its start and the last frame leads into the first. With `face_b` the latent
        moves from this face to face_b's at the same time. Every frame has the input's matte (with
        face_b: the two silhouettes blended as the latent moves)."""
        check_range("frames", frames, 2, MAX_FRAMES)
        check_matte(matte)
        check_size(size)
        check_output(frames, size or self.config.image_size, "frames")
        if not path:
            raise UserError("a morph needs at least one expression in its path")
        keys = torch.stack([self.affect(p) for p in path])
        if loop and len(keys) > 1:
            keys = torch.cat([keys, keys[:1]])
        u = torch.arange(frames) / (frames if loop else frames - 1)       # progress in [0, 1]
        pos = u * (len(keys) - 1)
        seg = pos.floor().long().clamp(max=max(len(keys) - 2, 0))
        e = ease(pos - seg)[:, None]
        affects = keys[seg] * (1 - e) + keys[(seg + 1).clamp(max=len(keys) - 1)] * e
        (original,), _ = self._open(image)
        x = self.prepare(original)
        z = self.encode_tensor(x, source)
        if face_b is None:
            drawn = self.decode_tensor(z.expand(frames, -1), affects, x.expand(frames, -1, -1, -1))
            return self._finish(drawn, original, matte, size)
        (other,), _ = self._open(face_b)
        w = ease(1 - (2 * u - 1).abs()) if loop else ease(u)
        z = torch.lerp(z, self.encode(other, source_b)[None], w[:, None].to(self.device))
        drawn = self.decode_tensor(z, affects, x.expand(frames, -1, -1, -1))
        return finish_between(to_pil(drawn), original, other, w.tolist(), self.config.background, matte, size)

    def morph_faces(self, image_a: ImageInput, image_b: ImageInput, expression: Affect = "neutral",
                    frames: int = 24, loop: bool = False, source_a: Affect | None = None,
                    source_b: Affect | None = None, size: int | None = None, matte: str = "auto") -> list[Image.Image]:
        """Frames interpolating between two faces' latents, both shown with `expression`."""
        return self.morph(image_a, [expression], frames, loop, source_a, image_b, source_b, size, matte)



def _one_affect(text: str) -> str:
    """A string affect, refused when it lists bare names ('joy,anger'), which could mean two targets."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if len(parts) > 1 and any("=" not in p for p in parts):
        raise UserError(f"'{text}' lists expressions without weights: for several outputs give them apart "
                        f"(--to joy --to anger, or a list in Python); for one mixed expression give weights "
                        f"(joy=0.5,anger=0.5)")
    return text
