"""Shipping models: export to ONNX or a plain safetensors file, and the cards of shipped models.

    export("runs/demo", "onnx", "export/")     # encoder.onnx, decoder.onnx, generator.onnx, model.json
    export("toon-128", "safetensors", "out/", discriminator=True, half=True)

ONNX graphs (float32, NCHW, a dynamic `batch` axis on every input and output):
- encoder:       image, source_affect -> mu, log_sigma
- decoder:       z, target_affect -> generated
- generator:     image, source_affect, target_affect -> generated (decodes the latent mean:
                 deterministic, as `fexgan transfer`)
- discriminator: image -> real_fake_logit, expression_logits (with `discriminator=True`)
The generated image is called `generated` in both graphs that make one: an ONNX graph cannot give
an output the name of one of its inputs. `model.json` beside them says everything a runtime needs
to feed them (classes, image size, normalisation, latent size) and the measured parity.

Every ONNX export is checked before it is kept: the same random inputs go through onnxruntime and
PyTorch on the CPU and the largest absolute difference of any output must stay below
`PARITY_TOLERANCE`, else `ParityError` is raised and nothing is written. Files are written into a
temporary folder beside the output and moved in only when all of them passed.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

import fexgan
from fexgan.config import migrate
from fexgan.errors import UserError
from fexgan.files.checkpoint import (
    LoadedModel,
    load_model,
    resolve_model,
    save_model,
    shipped_models,
)
from fexgan.generation.inference import FExGAN

FORMATS = ("onnx", "safetensors")
DEFAULT_OPSET = 18          # the lowest opset torch's exporter writes natively (17 is converted down)
MIN_OPSET = 17
PARITY_TOLERANCE = 1e-4     # largest absolute difference allowed between onnxruntime and PyTorch on CPU
PARITY_BATCH = 3            # differs from the tracing batch, so the check also proves the batch axis dynamic
TRACE_BATCH = 2
SIDECAR = "model.json"
SIDECAR_FORMAT = "fexgan-export-1"
NORMALISATION = ("RGB composited over `background` (alpha), padded to a square and resized to image_size; "
                 "input x in [0, 255] -> x / 127.5 - 1 in [-1, 1]; output y in [-1, 1] -> (y + 1) * 127.5, "
                 "clipped to [0, 255] and rounded")


class ParityError(RuntimeError):
    """onnxruntime and PyTorch disagree on an exported graph by more than PARITY_TOLERANCE."""


@dataclass
class Exported:
    """What an export wrote: every file (the sidecar last) and, for ONNX, the max abs difference per graph."""

    files: list[Path]
    parity: dict[str, float]
    sidecar: dict


class Method(nn.Module):
    """One method of the generator (`encode`, `decode`, `transfer`) as a module that ONNX can trace."""

    def __init__(self, generator: nn.Module, name: str):
        super().__init__()
        self.generator, self.name = generator, name

    def forward(self, first: torch.Tensor, affect: torch.Tensor, target_affect: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """encode(image, source_affect), decode(z, target_affect), transfer(image, source_affect, target_affect)."""
        method = getattr(self.generator, self.name)
        return method(first, affect) if target_affect is None else method(first, affect, target_affect)


@dataclass
class Graph:
    """One network to export: its inputs (name -> example of batch 1) and output names."""

    module: nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: tuple[str, ...]


def graphs(loaded: LoadedModel, discriminator: bool) -> dict[str, Graph]:
    """The networks of a model with their named inputs and outputs."""
    cfg, G = loaded.config, loaded.generator
    size, n_cls = cfg.image_size, cfg.num_classes
    image, affect, z = torch.zeros(1, 3, size, size), torch.zeros(1, n_cls), torch.zeros(1, cfg.latent_dim)
    out = {
        "encoder": Graph(Method(G, "encode"), {"image": image, "source_affect": affect}, ("mu", "log_sigma")),
        "decoder": Graph(Method(G, "decode"), {"z": z, "target_affect": affect}, ("generated",)),
        "generator": Graph(Method(G, "transfer"), {"image": image, "source_affect": affect, "target_affect": affect},
                           ("generated",)),
    }
    if discriminator:
        out["discriminator"] = Graph(loaded.discriminator, {"image": image}, ("real_fake_logit", "expression_logits"))
    return out


def random_inputs(graph: Graph, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs in the ranges a model sees: images in [-1, 1], affects with weights in [0, 1], z ~ N(0, I)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, example in graph.inputs.items():
        shape = (batch, *example.shape[1:])
        if name == "image":
            out[name] = torch.rand(shape, generator=g) * 2 - 1
        elif name == "z":
            out[name] = torch.randn(shape, generator=g)
        else:
            out[name] = torch.rand(shape, generator=g)
    return out


@contextlib.contextmanager
def quiet_exporter():
    """torch's exporter logs optional-package notes and deprecation warnings that say nothing to a user."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(graph: Graph, path: Path, opset: int) -> None:
    """One graph to one self-contained .onnx file, with a dynamic batch axis on every input and output."""
    batch = torch.export.Dim("batch")
    example = tuple(t.expand(TRACE_BATCH, *t.shape[1:]).contiguous() for t in graph.inputs.values())
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(graph.module, example, dynamo=True, verbose=False, input_names=list(graph.inputs),
                                    output_names=list(graph.outputs), opset_version=opset,
                                    dynamic_shapes=tuple({0: batch} for _ in example), external_data=False)
        program.save(str(path), external_data=False)


def parity(graph: Graph, path: Path, batch: int = PARITY_BATCH) -> float:
    """Largest absolute difference between onnxruntime and PyTorch over every output, on random inputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = random_inputs(graph, batch)
    got = session.run(list(graph.outputs), {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        want = graph.module(*inputs.values())
    want = want if isinstance(want, tuple) else (want,)
    return max(float((torch.from_numpy(a) - b).abs().max()) for a, b in zip(got, want))


def check_onnx_tools() -> None:
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}: pip install 'fexgan[export]'")


def sidecar(loaded: LoadedModel, source: Path | None) -> dict:
    """What a runtime needs to feed the exported networks, without this package."""
    cfg = loaded.config
    return {
        "format": SIDECAR_FORMAT, "fexgan_version": fexgan.__version__, "source": str(source) if source else None,
        "classes": list(cfg.classes), "image_size": cfg.image_size, "latent_dim": cfg.latent_dim,
        "input": {"layout": "NCHW", "channels": "RGB", "dtype": "float32", "range": [-1.0, 1.0],
                  "background": list(cfg.background), "normalisation": NORMALISATION},
        "affect": "one weight per class, in the order of `classes`: one-hot for a pure expression, "
                  "e.g. 0.5 and 0.5 for a mix of two",
        "model_config": cfg.to_dict(), "training": loaded.summary,
    }


def export(model: str | Path | FExGAN, fmt: str = "onnx", out_dir: str | Path = "export", discriminator: bool = False,
           opset: int = DEFAULT_OPSET, half: bool = False, log: Callable[[str], None] = lambda line: None) -> Exported:
    """Export a run folder, model file, shipped model name or loaded FExGAN to `out_dir`.

    `fmt` "onnx": one graph per network (see the module docstring), checked against PyTorch.
    `fmt` "safetensors": one fexgan model file (generator, plus the discriminator with
    `discriminator`), fp16 weights with `half` (loading casts them back to fp32).
    Both write `model.json`. Existing files of the same names in `out_dir` are replaced.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    if half and fmt != "safetensors":
        raise UserError("--half stores fp16 weights and applies to --format safetensors only")
    if fmt == "onnx":
        check_onnx_tools()
        import onnx

        if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
            raise UserError(f"opset {opset} is out of range {MIN_OPSET}..{onnx.defs.onnx_opset_version()}")
    if isinstance(model, FExGAN):
        loaded, source = LoadedModel(model.generator, model.discriminator, model.config, model.summary), model.path
    else:
        source = resolve_model(model)
        loaded = load_model(source, "cpu")
    if discriminator and loaded.discriminator is None:
        raise UserError("this model file has no discriminator to export; leave out --discriminator")
    loaded = LoadedModel(copy.deepcopy(loaded.generator).cpu().float().eval(),
                         copy.deepcopy(loaded.discriminator).cpu().float().eval() if loaded.discriminator else None,
                         loaded.config, loaded.summary)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    except OSError as err:
        raise UserError(f"cannot write to {out}: {err.strerror or err}") from None
    try:
        info = sidecar(loaded, source)
        if fmt == "onnx":
            results = _write_onnx(loaded, staging, discriminator, opset, log)
            info.update({"opset": opset, "exporter": f"torch.onnx dynamo (torch {torch.__version__})",
                         "graphs": results, "parity_tolerance": PARITY_TOLERANCE})
            checked = {name: g["max_abs_diff"] for name, g in results.items()}
        else:
            _write_safetensors(loaded, staging / "model.safetensors", discriminator, half)
            info["weights"] = {"file": "model.safetensors", "dtype": "float16" if half else "float32",
                               "parts": [f"generator.{name}" for name, _ in loaded.generator.named_children()]
                               + (["discriminator"] if discriminator else []),
                               "loads_with": "fexgan.load(PATH) or fexgan.files.checkpoint.load_model(PATH)"}
            checked = {}
        (staging / SIDECAR).write_text(json.dumps(info, indent=2) + "\n")
        files = []
        for name in [p.name for p in sorted(staging.iterdir()) if p.name != SIDECAR] + [SIDECAR]:
            (staging / name).replace(out / name)
            files.append(out / name)
        return Exported(files, checked, info)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_onnx(loaded: LoadedModel, folder: Path, discriminator: bool, opset: int,
                log: Callable[[str], None]) -> dict[str, dict]:
    results = {}
    for name, graph in graphs(loaded, discriminator).items():
        path = folder / f"{name}.onnx"
        export_onnx(graph, path, opset)
        diff = parity(graph, path)
        log(f"{name}.onnx: max abs difference onnxruntime vs PyTorch {diff:.2e} (batch {PARITY_BATCH})")
        if not diff < PARITY_TOLERANCE:
            raise ParityError(f"{name}.onnx differs from PyTorch by {diff:.3g} (limit {PARITY_TOLERANCE:g}); "
                              f"nothing was written")
        results[name] = {"file": path.name, "inputs": _shapes(graph.inputs),
                         "outputs": list(graph.outputs), "max_abs_diff": diff}
    return results


def _shapes(inputs: dict[str, torch.Tensor]) -> dict[str, list]:
    return {name: ["batch", *t.shape[1:]] for name, t in inputs.items()}


def _write_safetensors(loaded: LoadedModel, path: Path, discriminator: bool, half: bool) -> None:
    cast = (lambda m: m.half()) if half else (lambda m: m)   # half() leaves integer buffers alone
    disc = cast(loaded.discriminator) if discriminator else None
    save_model(path, cast(loaded.generator), disc, loaded.config, loaded.summary)


# ----------------------------------------------------------------------------- shipped models
def pretrained_folder() -> Path:
    """Where shipped models and their cards live inside the installed package."""
    return Path(str(resources.files("fexgan") / "pretrained"))


def model_card(name: str) -> dict:
    """The card of a shipped model (<name>.json beside its weights) with the weights' size in bytes."""
    folder = pretrained_folder()
    card_file = folder / f"{name}.json"
    card = json.loads(card_file.read_text()) if card_file.is_file() else {}
    weights = folder / f"{name}.safetensors"
    return {"name": name, **card, "bytes": weights.stat().st_size}


def shipped_cards() -> list[dict]:
    """Cards of every model shipped inside the package, by name."""
    return [model_card(name) for name in shipped_models()]


def card_summary(card: dict) -> dict[str, str]:
    """A shipped model's card as the columns `fexgan models` prints."""
    config = migrate(card.get("config", {}))  # cards of models trained before the configuration's sections: flat
    model, metrics = config.get("model", {}), card.get("evaluation", {}).get("metrics", {})

    def value(key: str, digits: int = 3) -> str:
        return f"{metrics[key]['value']:.{digits}f}" if key in metrics else "-"

    return {"name": card["name"], "network": f"{model.get('image_size', '?')}px w{model.get('width', '?')}",
            "data": config.get("data", {}).get("source", "?"), "steps": str(card.get("training", {}).get("steps", "?")),
            "PSNR truth": value("groundtruth_psnr", 2), "PSNR copy": value("groundtruth_psnr_copy", 2),
            "sharpness": value("groundtruth_sharpness", 2), "judge acc.": value("expression_accuracy"),
            "identity": value("identity_preservation"), "FID": value("fid_transfer", 1),
            "MB": f"{card['bytes'] / 1e6:.1f}"}
