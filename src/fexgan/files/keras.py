"""The reference's trained Keras weights as a fexgan model file (`fexgan import-keras`).

The reference (TensorFlow/Keras) keeps its encoder, decoder and discriminator as three models and saves
each to HDF5: Keras 2's `model.save("x.h5")` (weights under `model_weights/`) or `save_weights("x.h5")`
(at the root), and Keras 3's legacy `.h5` alike. Each layer lists its weights in a `weight_names`
attribute ('sequential_3/conv2d_3/kernel:0', 'mu/kernel:0'); a layer's blocks are nested models, so a
name's last part is the variable and the parts before it name the layer that owns it. Layers are
matched to the paper layout by kind in the file's order (a chain of convolutions keeps its order), and
the dense layers by the names the reference gives them ('mu', 'sigma') and by shape.

Layouts: a convolution's kernel is (kH, kW, in, out) in Keras and (out, in, kH, kW) in PyTorch; a
transposed convolution's (kH, kW, out, in) and (in, out, kH, kW): both are moved by the same
transpose, and neither is flipped (both frameworks compute the gradient of the same cross-correlation,
and Keras' 'same' padding of a 4 x 4 stride-2 kernel is PyTorch's padding 1 on both sides). A dense
kernel is (in, out) and PyTorch's (out, in); one that reads flattened features reads them in Keras'
NHWC order, so its rows are reordered to NCHW. Batch norm's gamma, beta, moving mean and moving
variance are PyTorch's weight, bias, running mean and running variance. Only h5py is needed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fexgan.config import ModelConfig
from fexgan.errors import UserError
from fexgan.files.checkpoint import save_model
from fexgan.nets.designs import build_generator
from fexgan.nets.networks import Discriminator, Generator, build_discriminator
from fexgan.presets import build_config

PARTS = ("encoder", "decoder", "discriminator")
KINDS = {"conv": "convolutions", "bn": "batch norms", "dense": "dense layers"}
NORM_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


@dataclass
class KerasLayer:
    """One layer's weights as the file holds them: `name` is its path in the model ('sequential_3/conv2d_3')."""

    name: str
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if "moving_mean" in self.weights or "gamma" in self.weights:
            return "bn"
        kernel = self.weights.get("kernel")
        return {4: "conv", 2: "dense"}.get(kernel.ndim if kernel is not None else 0, "other")

    def shapes(self) -> str:
        return ", ".join(f"{k} {tuple(v.shape)}" for k, v in self.weights.items())


@dataclass
class Slot:
    """A layer of the paper layout waiting for its Keras weights."""

    what: str
    kind: str
    module: nn.Module
    hint: str = ""                              # the name the reference gives the layer
    flatten: tuple[int, int, int] | None = None  # (C, H, W) of the features a dense layer reads flattened

    def keras_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each Keras variable this layer takes."""
        m = self.module
        if self.kind == "bn":
            return {k: tuple(m.weight.shape) for k in NORM_NAMES}
        w = m.weight
        kernel = tuple(w.shape[i] for i in (2, 3, 1, 0)) if self.kind == "conv" else (w.shape[1], w.shape[0])
        return {"kernel": kernel, **({"bias": tuple(m.bias.shape)} if m.bias is not None else {})}

    def load(self, layer: KerasLayer) -> None:
        """Copy the layer's weights in, converted to PyTorch's layouts."""
        m, w = self.module, layer.weights
        with torch.no_grad():
            if self.kind == "bn":
                for keras_name, name in NORM_NAMES.items():
                    getattr(m, name).copy_(torch.from_numpy(w[keras_name]))
                return
            kernel = w["kernel"]
            if self.kind == "conv":  # (kH, kW, in, out) -> (out, in, kH, kW); transposed: (kH, kW, out, in) -> (in, out, kH, kW)
                kernel = kernel.transpose(3, 2, 0, 1)
            elif self.flatten is not None:  # rows in NHWC order -> NCHW
                c, h, wd = self.flatten
                kernel = kernel.reshape(h, wd, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * wd)
            else:
                kernel = kernel.T
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            if m.bias is not None:
                m.bias.copy_(torch.from_numpy(w["bias"]))


def read_h5(path: Path) -> list[KerasLayer]:
    """Every layer with weights in a Keras HDF5 file, in the file's layer order."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Keras weights file {path} does not exist")
    if not h5py.is_hdf5(path):
        raise UserError(f"{path} is not an HDF5 file; give the .h5 files the reference's Keras models were saved to")
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if not _names(root, "layer_names"):
                raise UserError(f"{path} is an HDF5 file but holds no Keras weights (no layer_names); save the model "
                                f"with Keras' model.save('NAME.h5') or save_weights('NAME.h5')")
            return _layers(root)
    except (KeyError, OSError, ValueError, TypeError) as err:
        raise UserError(f"{path}: its Keras weights cannot be read ({err.__class__.__name__}: {err}); the file may be "
                        f"truncated or damaged") from None


def _layers(root: object) -> list[KerasLayer]:
    """The weights of every layer `layer_names` lists, grouped by the layer that owns each."""
    layers: dict[str, KerasLayer] = {}
    for layer_name in _names(root, "layer_names"):
        group = root[layer_name]  # type: ignore[index]
        for weight_name in _names(group, "weight_names"):
            *owner, variable = weight_name.split("/")
            key = "/".join(owner) if owner and owner[0] == layer_name else "/".join([layer_name, *owner])
            layer = layers.setdefault(key, KerasLayer(key))
            layer.weights[variable.split(":")[0]] = np.asarray(group[weight_name], dtype=np.float32)
    return list(layers.values())


def _text(name: bytes | str) -> str:
    return name.decode("utf8") if isinstance(name, bytes) else str(name)


def _names(node: object, attr: str) -> list[str]:
    """A list attribute as Keras writes it: whole, or in chunks `attr0`, `attr1`, ... when it is over 64 KB."""
    attrs = node.attrs  # type: ignore[attr-defined]
    if attr in attrs:
        return [_text(n) for n in attrs[attr]]
    chunks = []
    while f"{attr}{len(chunks)}" in attrs:
        chunks.append(attrs[f"{attr}{len(chunks)}"])
    return [_text(n) for chunk in chunks for n in chunk]


def slots(part: str, G: Generator, D: Discriminator, cfg: ModelConfig) -> list[Slot]:
    """The paper layout's layers of `part`, in the order the reference builds them."""
    found: list[Slot] = []

    def chain(name: str, blocks: nn.Module) -> None:
        for i, block in enumerate(blocks, 1):
            for m in block.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    found.append(Slot(f"{name} {i}'s {'transposed ' * isinstance(m, nn.ConvTranspose2d)}convolution", "conv", m))
                elif isinstance(m, nn.BatchNorm2d):
                    found.append(Slot(f"{name} {i}'s batch norm", "bn", m))

    if part == "encoder":
        enc = G.encoder
        chain("encoder block", enc.blocks)
        found += [Slot("the affect plane (dense)", "dense", enc.affect_plane[0]),
                  Slot("mu (dense)", "dense", enc.mu, "mu", (enc.mu.in_features, 1, 1)),
                  Slot("log-sigma (dense)", "dense", enc.log_sigma, "sigma", (enc.log_sigma.in_features, 1, 1))]
    elif part == "decoder":
        dec = G.decoder
        chain("decoder block", [*dec.blocks, dec.out])
        found[-1].what = "the output layer's transposed convolution"
        found += [Slot("the affect's first dense layer", "dense", dec.affect_in[0]),
                  Slot("the affect's second dense layer", "dense", dec.affect_in[1]),
                  Slot("the latent's dense layer", "dense", dec.z_in[0])]
    else:
        chain("discriminator block", list(D.features)[:3])
        side = cfg.image_size // 8
        feat = (D.real_fake.in_features // side**2, side, side)
        found += [Slot("the real/fake head (dense)", "dense", D.real_fake, flatten=feat),
                  Slot("the expression head (dense)", "dense", D.classifier, flatten=feat)]
    return found


def assign(path: Path, part: str, layers: list[KerasLayer], wanted: list[Slot], size: int = 128
           ) -> list[tuple[Slot, KerasLayer]]:
    """Pair every slot with a Keras layer: convolutions and batch norms in order, dense layers by name, then
    shape. A layout that differs is a `UserError` naming the layer and both shapes."""
    pairs = []
    for kind, plural in KINDS.items():
        have = [layer for layer in layers if layer.kind == kind]
        want = [slot for slot in wanted if slot.kind == kind]
        if len(have) != len(want):
            names = ", ".join(layer.name for layer in have) or "none"
            raise UserError(f"{path}: the paper layout's {part} has {len(want)} {plural} with weights, this file "
                            f"has {len(have)} ({names}); is it the {part}'s file, of the reference at {size} px?")
        if kind != "dense":
            pairs += list(zip(want, have))
            continue
        left = list(have)
        for slot in sorted(want, key=lambda s: not s.hint):  # the named layers first
            named = [layer for layer in left if slot.hint and layer.name.split("/")[-1] == slot.hint]
            fits = named or [layer for layer in left if _fits(slot, layer)] or left
            pairs.append((slot, fits[0]))
            left.remove(fits[0])
    for slot, layer in pairs:
        expected = slot.keras_shapes()
        if {k: tuple(layer.weights[k].shape) for k in expected if k in layer.weights} != expected or \
                set(layer.weights) != set(expected):
            want = ", ".join(f"{k} {v}" for k, v in expected.items())
            raise UserError(f"{path}: layer '{layer.name}' has {layer.shapes()}; the paper layout's {slot.what} "
                            f"expects {want}")
    return pairs


def _fits(slot: Slot, layer: KerasLayer) -> bool:
    return {k: tuple(v.shape) for k, v in layer.weights.items()} == slot.keras_shapes()


def _keras_version(path: Path) -> str:
    import h5py

    with h5py.File(path, "r") as f:
        for node in (f, f.get("model_weights", f)):
            if "keras_version" in node.attrs:
                return _text(node.attrs["keras_version"])
    return "unknown"


def import_keras(encoder: Path, decoder: Path, discriminator: Path, out: Path,
                 cfg: ModelConfig | None = None) -> Path:
    """Read the reference's three Keras weight files into a model of the `paper` preset (`cfg`: another
    layout of the same design, for tests) and write it as a fexgan model file at `out`."""
    files = dict(zip(PARTS, (Path(encoder), Path(decoder), Path(discriminator))))
    read = {part: read_h5(path) for part, path in files.items()}  # every file is checked before anything is built
    if cfg is None:
        # The reference composites nothing: it takes the colour channels of FERG-DB's RGBA images, whose
        # transparent pixels are black, so an imported model sees its faces over black.
        cfg = ModelConfig(**{**build_config("paper").model.to_dict(), "background": (0, 0, 0)})
    G, D = build_generator(cfg), build_discriminator(cfg)  # every weight is replaced by the files'
    for part, path in files.items():
        for slot, layer in assign(path, part, read[part], slots(part, G, D, cfg), cfg.image_size):
            slot.load(layer)
    summary = {"imported_from": "keras", "keras_files": {part: path.name for part, path in files.items()},
               "keras_version": _keras_version(files["encoder"])}
    save_model(Path(out), G.eval(), D.eval(), cfg, summary)
    return Path(out)
