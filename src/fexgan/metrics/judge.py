"""The judge: an independent expression + identity classifier, trained on real images only.

Metrics on generated images need an observer that never saw a generated image and is not the GAN's
own discriminator (which was trained against the generator). The judge is a small CNN with two
heads, trained on the training split of a dataset's real images and tested on its held-out split;
its penultimate layer is the feature space of FID and diversity (fexgan.metrics.realism).

It is trained once per dataset and cached as `cache_dir()/judges/<kind>-<size>-<key>.safetensors`
(weights + JSON metadata: architecture, label names, held-out accuracy), keyed by the data source,
the image size, the data's content and `JUDGE_VERSION`, and loaded without executing code.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from fexgan.data.images import to_model_input
from fexgan.data.pairs import split_indices
from fexgan.data.sources import ImageSet, cache_dir, load_source, parse_source
from fexgan.data.views import random_view
from fexgan.errors import UserError, warn
from fexgan.expressions import EXPRESSIONS
from fexgan.files.checkpoint import save_tensors
from fexgan.metrics.generated import batched

JUDGE_VERSION = 2
FORMAT = "fexgan-judge-1"
VAL_FRACTION = 0.2     # the default training split: the judge is tested on a default run's val images
MAX_INPUT = 64         # the judge looks at images downsampled to at most this many pixels a side


@dataclass
class JudgeConfig:
    """Architecture and label names: everything needed to rebuild a judge from its file."""

    image_size: int
    classes: tuple[str, ...]
    identities: tuple[str, ...]
    width: int = 32
    features: int = 128
    input_size: int = 0   # 0: min(image_size, MAX_INPUT)

    def __post_init__(self) -> None:
        self.input_size = self.input_size or min(self.image_size, MAX_INPUT)

    @classmethod
    def from_dict(cls, d: dict) -> JudgeConfig:
        return cls(**{**d, "classes": tuple(d["classes"]), "identities": tuple(d["identities"])})


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


class JudgeNet(nn.Module):
    """image in [-1, 1] -> (expression logits, identity logits); `features` is the layer before.

    Three conv + max-pool stages, then a dense layer over the flattened map: expressions are told by
    where the brows, lids and lip corners are, which global pooling would throw away."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.body = nn.Sequential(_block(3, w // 2), _block(w // 2, w), _block(w, w), nn.Flatten(),
                                  nn.Linear(w * (cfg.input_size // 8) ** 2, cfg.features), nn.ReLU(inplace=True))
        self.num_features = cfg.features
        self.expression = nn.Linear(cfg.features, len(cfg.classes))
        self.identity = nn.Linear(cfg.features, len(cfg.identities))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.cfg.input_size:
            x = F.interpolate(x, size=(self.cfg.input_size,) * 2, mode="area")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.expression(f), self.identity(f)


class Judge:
    """A trained judge in eval mode. Images are float in [-1, 1] or uint8, (B, 3, S, S), any B."""

    def __init__(self, net: JudgeNet, meta: dict):
        self.net = net.eval()
        self.meta = meta   # data source, held-out accuracy and counts, training time

    @property
    def classes(self) -> tuple[str, ...]:
        return self.net.cfg.classes

    @property
    def identities(self) -> tuple[str, ...]:
        return self.net.cfg.identities

    @property
    def accuracy(self) -> dict:
        """Held-out accuracy on real images: {"expression", "identity", "n"}."""
        return self.meta["accuracy"]

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        x = to_model_input(images) if images.dtype == torch.uint8 else images.float()
        return x.to(next(self.net.parameters()).device)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(expression probabilities (B, classes), identity probabilities (B, identities))."""
        both = batched(lambda x: torch.cat([p.softmax(1) for p in self.net(self._input(x))], 1), images)
        return both[:, :len(self.classes)], both[:, len(self.classes):]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, F) features of the penultimate layer."""
        return batched(lambda x: self.net.features(self._input(x)), images)


def train_judge(data: ImageSet, steps: int = 0, batch_size: int = 64, seed: int = 0,
                device: str | torch.device = "cpu", log=print) -> Judge:
    """Train on the data's default training split (real images, augmented as GAN training is and
    degraded) and measure accuracy on its held-out split.

    `steps` 0: three epochs, at least 400 and at most 1500 steps (about 10 s to 1 min on 2 cores)."""
    train_idx, val_idx = split_indices(data, VAL_FRACTION, seed=0)
    steps = steps or min(1500, max(400, 3 * len(train_idx) // batch_size))
    cfg = JudgeConfig(int(data.images.shape[-1]), tuple(data.classes), tuple(data.identities))
    torch.manual_seed(seed)
    net = JudgeNet(cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    net.train()
    for step in range(steps):
        idx = train_idx[torch.randint(len(train_idx), (batch_size,), generator=g)]
        x = random_view(to_model_input(data.images[idx]), g).to(device)
        expr_logits, id_logits = net(x)
        loss = F.cross_entropy(expr_logits, data.expression[idx].to(device)) + \
            F.cross_entropy(id_logits, data.identity[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    judge = Judge(net, {})
    held_out = val_idx if len(val_idx) else train_idx
    expr_p, id_p = judge.predict(data.images[held_out])
    judge.meta = {
        "accuracy": {"expression": float((expr_p.argmax(1) == data.expression[held_out]).float().mean()),
                     "identity": float((id_p.argmax(1) == data.identity[held_out]).float().mean()),
                     "n": len(held_out), "split": "val" if len(val_idx) else "train (no held-out images)"},
        "train": {"images": len(train_idx), "steps": steps, "batch_size": batch_size,
                  "seconds": round(time.time() - start, 1)},
    }
    acc = judge.accuracy
    log(f"judge trained in {judge.meta['train']['seconds']} s: held-out accuracy expression "
        f"{acc['expression']:.3f}, identity {acc['identity']:.3f} (n={acc['n']})")
    return judge


def judge_path(data_spec: str, data: ImageSet) -> Path:
    """Cache file of the judge for this data source, size and content."""
    kind, _ = parse_source(data_spec)
    digest = hashlib.blake2b(digest_size=10)
    for part in (data.images, data.expression, data.identity):
        digest.update(part.contiguous().numpy().tobytes())
    digest.update(json.dumps([data_spec, data.identities, list(data.classes), JUDGE_VERSION]).encode())
    return cache_dir() / "judges" / f"{kind}-{data.images.shape[-1]}-{digest.hexdigest()}.safetensors"


def save_judge(path: Path, judge: Judge) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in judge.net.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(asdict(judge.net.cfg)), "meta": json.dumps(judge.meta)}
    save_tensors(path, tensors, metadata)


def load_judge(path: Path, device: str | torch.device = "cpu") -> Judge:
    """Rebuild a judge from its file (safetensors: tensors and JSON only, no code)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise UserError(f"{path} is not a fexgan judge (format '{meta.get('format')}')")
        net = JudgeNet(JudgeConfig.from_dict(json.loads(meta["config"])))
        net.load_state_dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"{path} is not a readable judge file ({err})") from None
    return Judge(net.to(device), json.loads(meta["meta"]))


def get_judge(data_spec: str, image_size: int, device: str | torch.device = "cpu", *, data: ImageSet | None = None,
              background: Sequence[int] = (255, 255, 255), classes: Sequence[str] = EXPRESSIONS, log=print) -> Judge:
    """The judge of a dataset at `image_size`: loaded from the cache, or trained once and cached.

    Pass `data` (the loaded source) to skip loading it again; a broken cache file is retrained.
    """
    if data is None:
        data = load_source(data_spec, image_size, tuple(background), tuple(classes))
    if data.images.shape[-1] != image_size:
        raise UserError(f"the data is {data.images.shape[-1]} px but the judge was asked for {image_size} px")
    path = judge_path(data_spec, data)
    if path.is_file():
        try:
            judge = load_judge(path, device)
            judge.meta["path"] = str(path)
            return judge
        except UserError as err:
            warn(f"{err}; training it again")
    log(f"training the judge for {data_spec} at {image_size} px (once; cached in {path.parent})")
    judge = train_judge(data, device=device, log=log)
    save_judge(path, judge)
    judge.meta["path"] = str(path)
    return judge
