"""The reference's Keras weights imported (`fexgan.files.keras`, `fexgan import-keras`): Keras 2's HDF5 layout
read with h5py alone, every weight where the paper layout has it, one-line errors for what is not the
reference's, and, where TensorFlow is installed, the reference's three models built from its code facts
(../shared/paper/reference-architecture.md) giving the same outputs as the imported model."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from fexgan.config import ModelConfig
from fexgan.errors import UserError
from fexgan.files import checkpoint as ckpt
from fexgan.files.keras import import_keras
from fexgan.nets.networks import Discriminator, Generator
from fexgan.presets import PAPER_NUMERICS

FEXGAN = Path(sys.executable).parent / "fexgan"
SMALL = ModelConfig(image_size=32, width=0.25, latent_dim=16, background=(0, 0, 0), **PAPER_NUMERICS)
Layer = tuple[str, list[tuple[str, np.ndarray]]]  # a Keras layer: its name, its (weight name, value)s


# ----------------------------------------------------------------------------- Keras 2's files, by h5py
def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float32)


def block(name: str, conv: nn.Module, norm: nn.Module | None, n: int) -> Layer:
    """A nested Sequential of the reference (`sequential_n`: a convolution, maybe a batch norm) as Keras 2 names
    its weights: kernels (kH, kW, in, out), transposed ones (kH, kW, out, in); variables ':0'."""
    kind = "conv2d_transpose" if isinstance(conv, nn.ConvTranspose2d) else "conv2d"
    weights = [(f"{kind}_{n}/kernel:0", np_(conv.weight).transpose(2, 3, 1, 0))]
    if norm is not None:
        weights += [(f"batch_normalization_{n}/{k}:0", np_(getattr(norm, v))) for k, v in
                    (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var"))]
    return name, weights


def dense(name: str, m: nn.Linear, nchw: tuple[int, int, int] | None = None) -> Layer:
    """A Keras dense layer: kernel (in, out), reading flattened features in NHWC order."""
    w = np_(m.weight)
    if nchw is not None:
        c, h, wd = nchw
        w = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(len(w), -1)
    return name, [(f"{name}/kernel:0", np.ascontiguousarray(w.T)), (f"{name}/bias:0", np_(m.bias))]


def write_keras2(path: Path, layers: list[Layer], whole_model: bool = True) -> Path:
    """An HDF5 file laid out as Keras 2 writes it: `model.save` (under model_weights/) or `save_weights`."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if whole_model else f
        root.attrs["layer_names"] = [name.encode() for name, _ in layers]
        root.attrs["keras_version"] = b"2.6.0"
        for name, weights in layers:
            g = root.create_group(name)
            g.attrs["weight_names"] = [w.encode() for w, _ in weights]
            for w, value in weights:
                g.create_dataset(w, data=value)
    return path


def randomised(G: Generator, D: Discriminator) -> None:
    """Batch-norm statistics and scales away from their starting values, so that each one counts."""
    gen = torch.Generator().manual_seed(1)
    for m in [*G.modules(), *D.modules()]:
        if isinstance(m, nn.BatchNorm2d):
            for t, low in ((m.weight, 0.5), (m.running_var, 0.5)):
                t.data = low + torch.rand(t.shape, generator=gen)
            for t in (m.bias, m.running_mean):
                t.data = 0.2 * torch.randn(t.shape, generator=gen)
    G.encoder.log_sigma.weight.data = 0.1 * torch.randn(G.encoder.log_sigma.weight.shape, generator=gen)


def keras2_files(folder: Path, G: Generator, D: Discriminator, cfg: ModelConfig) -> list[Path]:
    """The reference's three files holding the weights of G and D, in Keras 2's layout and names: the encoder and
    decoder saved whole, the discriminator by `save_weights`; dense layers in another order than ours."""
    enc, dec = G.encoder, G.decoder
    blocks = [block(f"sequential_{i}", b[0], b[1] if i else None, i) for i, b in enumerate(enc.blocks)]
    feat = (enc.mu.in_features, 1, 1)
    encoder = [("img_input", []), ("label_input", []), dense("dense", enc.affect_plane[0]), ("reshape", []),
               ("concatenate", []), *blocks, ("flatten", []), dense("sigma", enc.log_sigma, feat), dense("mu", enc.mu, feat)]
    n = len(enc.blocks)
    decoder = [("latent_input", []), ("label_input", []), dense("dense_2", dec.affect_in[1]), dense("dense_3", dec.z_in[0]),
               dense("dense_1", dec.affect_in[0]), ("concatenate_1", []),
               *[block(f"sequential_{n + i}", b[0], b[1], n + i) for i, b in enumerate(dec.blocks)],
               ("img_output", [("img_output/kernel:0", np_(dec.out[0].weight).transpose(2, 3, 1, 0)),
                               ("img_output/bias:0", np_(dec.out[0].bias))])]
    side = cfg.image_size // 8
    heads = (D.real_fake.in_features // side**2, side, side)
    disc = [("input_image", []), *[block(f"sequential_{20 + i}", D.features[i][0], D.features[i][1] if i else None, 20 + i)
                                   for i in range(3)],
            ("flatten_1", []), dense("dense_4", D.real_fake, heads), dense("dense_5", D.classifier, heads)]
    return [write_keras2(folder / "encoder.h5", encoder), write_keras2(folder / "decoder.h5", decoder),
            write_keras2(folder / "discriminator.h5", disc, whole_model=False)]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Generator, Discriminator, list[Path]]:
    torch.manual_seed(0)
    G, D = Generator(SMALL).eval(), Discriminator(SMALL).eval()
    randomised(G, D)
    return G, D, keras2_files(tmp_path_factory.mktemp("keras2"), G, D, SMALL)


def test_keras2_files_import_weight_for_weight(small_model: tuple[Generator, Discriminator, list[Path]],
                                               tmp_path: Path) -> None:
    G, D, files = small_model
    out = import_keras(*files, tmp_path / "model.safetensors", cfg=SMALL)
    loaded = ckpt.load_model(out)
    assert loaded.config == SMALL and loaded.summary["imported_from"] == "keras"
    assert loaded.summary["keras_files"] == {"encoder": "encoder.h5", "decoder": "decoder.h5",
                                             "discriminator": "discriminator.h5"}
    for mine, theirs in ((loaded.generator, G), (loaded.discriminator, D)):
        want = {k: v for k, v in theirs.state_dict().items() if not k.endswith("num_batches_tracked")}
        got = mine.state_dict()
        assert all(torch.equal(got[k], v) for k, v in want.items()), [k for k, v in want.items() if not torch.equal(got[k], v)]


def test_the_paper_layout_is_the_default_and_the_file_says_where_it_came_from(tmp_path: Path) -> None:
    cfg = ModelConfig(background=(0, 0, 0), **PAPER_NUMERICS)
    torch.manual_seed(0)
    G, D = Generator(cfg).eval(), Discriminator(cfg).eval()
    out = import_keras(*keras2_files(tmp_path, G, D, cfg), tmp_path / "paper.safetensors")
    meta = ckpt.raw_metadata(out)
    assert meta["format"] == "fexgan-model-3" and '"imported_from": "keras"' in meta["summary"]
    assert '"keras_version": "2.6.0"' in meta["summary"]
    loaded = ckpt.load_model(out)
    assert loaded.config == cfg
    assert torch.equal(loaded.discriminator.real_fake.weight, D.real_fake.weight)


def test_what_is_not_the_references_weights_is_refused_in_one_line(small_model: tuple[Generator, Discriminator, list[Path]],
                                                                   tmp_path: Path) -> None:
    _, _, (enc, dec, disc) = small_model
    out = tmp_path / "m.safetensors"
    with pytest.raises(UserError, match="missing.h5 does not exist"):
        import_keras(tmp_path / "missing.h5", dec, disc, out, cfg=SMALL)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(UserError, match="text.h5 is not an HDF5 file"):
        import_keras(enc, tmp_path / "text.h5", disc, out, cfg=SMALL)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(UserError, match="holds no Keras weights"):
        import_keras(enc, dec, tmp_path / "other.h5", out, cfg=SMALL)
    with h5py.File(tmp_path / "damaged.h5", "w") as f:
        f.attrs["layer_names"] = [b"mu"]
        f.create_group("mu").attrs["weight_names"] = [b"mu/kernel:0"]  # listed, not there
    with pytest.raises(UserError, match="damaged.h5: its Keras weights cannot be read .*damaged"):
        import_keras(enc, dec, tmp_path / "damaged.h5", out, cfg=SMALL)
    # the decoder's file given as the encoder's: the layer and both shapes are named
    with pytest.raises(UserError, match=r"layer 'sequential_\d+/conv2d_transpose_\d+' has kernel \(4, 4, \d+, \d+\); "
                                        r"the paper layout's encoder block 1's convolution expects kernel \(4, 4, 4, 32\)"):
        import_keras(dec, dec, disc, out, cfg=SMALL)
    with pytest.raises(UserError, match=r"discriminator has 3 convolutions with weights, this file has 5 .*the discriminator's file"):
        import_keras(enc, dec, enc, out, cfg=SMALL)
    # weights of a smaller layout than the paper's 128 px one
    proc = subprocess.run([str(FEXGAN), "import-keras", str(enc), str(dec), str(disc), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "encoder.h5: the paper layout's encoder has 7 convolutions" in lines[0] and "at 128 px?" in lines[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- TensorFlow's own outputs
ENCODER = [128, 256, 512, 512, 512, 512, 128]   # the reference's tables at 128 px
DECODER = [512, 512, 512, 512, 256, 128]
DISCRIMINATOR = [64, 128, 512]


def reference_models(keras: object, size: int = 128, latent: int = 128) -> tuple:
    """The reference's encoder, decoder and discriminator built from its code facts, layers without arguments
    (Keras' defaults) where it leaves them so, each block a nested Sequential, the names it gives."""
    L = keras.layers  # type: ignore[attr-defined]

    def down(n: int, bn: bool = True, act: bool = True) -> object:
        s = keras.Sequential([L.Conv2D(n, 4, strides=2, padding="same", use_bias=False)])  # type: ignore[attr-defined]
        for layer in ([L.BatchNormalization()] if bn else []) + ([L.LeakyReLU()] if act else []):
            s.add(layer)
        return s

    def up(n: int, dropout: bool) -> object:
        s = keras.Sequential([L.Conv2DTranspose(n, 4, strides=2, padding="same", use_bias=False),  # type: ignore[attr-defined]
                              L.BatchNormalization()])
        for layer in ([L.Dropout(0.5)] if dropout else []) + [L.ReLU()]:
            s.add(layer)
        return s

    img, z = keras.Input((size, size, 3), name="img_input"), keras.Input((latent,), name="latent_input")  # type: ignore[attr-defined]
    label = keras.Input((7,), name="label_input")  # type: ignore[attr-defined]
    plane = L.Reshape((size, size, 1))(L.Dense(size * size, activation="relu")(label))
    x = L.concatenate([img, plane])
    for i, c in enumerate(ENCODER):
        x = down(c, i > 0, i < len(ENCODER) - 1)(x)
    x = L.Flatten()(x)
    encoder = keras.Model([img, label], [L.Dense(latent, name="mu")(x), L.Dense(latent, name="sigma")(x)])  # type: ignore[attr-defined]
    y = L.Reshape((1, 1, 256))(L.Dense(256, activation="relu")(L.Dense(64)(label)))
    h = L.concatenate([L.Reshape((1, 1, 256))(L.Dense(256, activation="relu")(z)), y])
    for i, c in enumerate(DECODER):
        h = up(c, i < 3)(h)
    out = L.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh", name="img_output")(h)
    decoder = keras.Model([z, label], out)  # type: ignore[attr-defined]
    image = keras.Input((size, size, 3), name="input_image")  # type: ignore[attr-defined]
    h = L.Flatten()(down(DISCRIMINATOR[2])(down(DISCRIMINATOR[1])(down(DISCRIMINATOR[0], False)(image))))
    disc = keras.Model(image, [L.Dense(1, activation="sigmoid")(h), L.Dense(7, activation="softmax")(h)])  # type: ignore[attr-defined]
    return encoder, decoder, disc


def randomise_keras(model: object, rng: np.random.Generator, transposed: bool) -> None:
    """Random weights that keep activations near unit scale: He-normal kernels (a 4 x 4 stride-2 transposed
    convolution sums 4 taps of each input channel), batch norms away from 1 and 0."""
    for v in model.weights:  # type: ignore[attr-defined]
        name, shape = v.name.split("/")[-1].split(":")[0], tuple(v.shape)
        if name == "kernel":
            fan_in = shape[0] if len(shape) == 2 else 4 * shape[3] if transposed else 16 * shape[2]
            value = rng.normal(0, np.sqrt(2 / fan_in), shape)
        elif name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # beta, moving_mean, bias
            value = rng.normal(0, 0.2, shape)
        v.assign(value.astype(np.float32))


def keras_side(folder: str) -> None:
    """In a process of its own (TensorFlow stays out of the test process): the reference's models with random
    weights saved as its .h5 files, random inputs, and TensorFlow's outputs on them (inference mode)."""
    import warnings

    warnings.simplefilter("ignore")
    import tensorflow as tf

    rng, out = np.random.default_rng(0), Path(folder)
    models = reference_models(tf.keras)
    for model, name in zip(models, ("encoder", "decoder", "discriminator")):
        randomise_keras(model, rng, transposed=name == "decoder")
        model.save(out / f"{name}.h5")  # the reference's HDF5 files
    images = rng.uniform(-1, 1, (4, 128, 128, 3)).astype(np.float32)
    affect = rng.uniform(0, 1, (4, 7)).astype(np.float32)  # mixed expressions too
    z = rng.normal(size=(4, 128)).astype(np.float32)
    encoder, decoder, disc = models
    mu, log_sigma = encoder([images, affect], training=False)
    real, expression = disc(images, training=False)
    np.savez(out / "tensorflow.npz", images=images, affect=affect, z=z, mu=mu, log_sigma=log_sigma,
             image=np.asarray(decoder([z, affect], training=False)).transpose(0, 3, 1, 2), real=real, expression=expression)


def test_imported_weights_give_tensorflows_outputs(tmp_path: Path) -> None:
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed (pip install 'fexgan[keras]')")
    here = Path(__file__).parent
    run = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(here)!r}); "
                          f"from test_keras import keras_side; keras_side({str(tmp_path)!r})"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    paths = [tmp_path / f"{name}.h5" for name in ("encoder", "decoder", "discriminator")]
    out = subprocess.run([str(FEXGAN), "import-keras", *map(str, paths), "--out", str(tmp_path / "paper.safetensors")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    loaded = ckpt.load_model(tmp_path / "paper.safetensors")
    G, D = loaded.generator, loaded.discriminator
    want = dict(np.load(tmp_path / "tensorflow.npz"))
    nchw, a = torch.from_numpy(want.pop("images")).permute(0, 3, 1, 2), torch.from_numpy(want.pop("affect"))
    z = torch.from_numpy(want.pop("z"))
    with torch.no_grad():
        got = dict(zip(("mu", "log_sigma"), G.encode(nchw, a)))
        got["image"] = G.decode(z, a)
        real, expression = D(nchw)
        got["real"], got["expression"] = torch.sigmoid(real)[:, None], torch.softmax(expression, 1)
    diffs = {k: float(np.abs(got[k].numpy() - want[k]).max()) for k in want}
    scales = {k: float(np.abs(want[k]).max()) for k in want}
    print("max |PyTorch - TensorFlow|:", diffs, "largest |output|:", scales)
    assert all(d < 1e-4 for d in diffs.values()), diffs
    assert all(s > 0.05 for s in scales.values()), scales  # outputs that can tell a wrong layout from a right one
