"""`fexgan finetune` (src/fexgan/training/finetune.py): a trained model adapted to a new character from one
image, with the base model's data replayed and the encoder kept fixed; real runs of the tiny preset."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fexgan.data import toon
from fexgan.data.replay import replay_mix
from fexgan.errors import UserError
from fexgan.files import checkpoint as ckpt
from fexgan.presets import build_config
from fexgan.training.finetune import finetune, finetune_config
from fexgan.training.loop import train

FEXGAN = Path(sys.executable).parent / "fexgan"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model of the edit design trained on 5 of the 6 toon:4 characters (the last is held out)."""
    cfg = build_config("tiny", overrides=["run.device=cpu", "run.threads=1", "run.steps=12", "model.generator=edit", "data.held_out=1"])
    return train(cfg, tmp_path_factory.mktemp("finetune") / "base", progress=False)


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One neutral face of the held-out character, as a user's folder."""
    root = tmp_path_factory.mktemp("newcomer")
    character = toon.make_characters(6)[5]
    (root / "mine" / "neutral").mkdir(parents=True)
    toon.render_face(character, "neutral", size=64).save(root / "mine" / "neutral" / "face.png")
    return root


def test_a_finetune_starts_from_the_model_keeps_the_encoder_and_replays_the_old_data(base: Path, newcomer: Path,
                                                                                     tmp_path: Path) -> None:
    cfg = finetune_config(base, f"folder:{newcomer}", steps=4, overrides=["run.device=cpu", "run.threads=1", "optimiser.batch_size=8"])
    assert cfg.finetune.init_from == str(base) and cfg.finetune.replay == "toon:4" and cfg.data.held_out == 1
    assert cfg.model == ckpt.load_model(base).config and cfg.finetune.freeze == ("generator.encoder",)
    assert cfg.losses.d_classify_fakes is False and cfg.optimiser.lr == 1e-4  # the edit design's losses (the any preset's)
    assert cfg.finetune.fixed_norms and cfg.losses.late_fraction == 0  # going on where the base model's training ended
    data, train_idx, _, new = replay_mix(cfg)
    assert torch.equal(new, data.identity == 0)
    assert data.identities[0] == "mine" and len(data.identities) == 7
    mine = (data.identity[train_idx] == 0).float().mean().item()
    assert 0.2 <= mine <= 0.3  # a quarter of every epoch is the new face, the rest the replayed data
    assert not (data.identity[train_idx] == 6).any()  # the base's held-out character stays out of the replay
    model = finetune(base, f"folder:{newcomer}", tmp_path / "run", steps=4,
                     overrides=["run.device=cpu", "run.threads=1", "optimiser.batch_size=8"], progress=False)
    before, after = ckpt.read_tensors(base), ckpt.read_tensors(model)
    encoder = [k for k in before if k.startswith("generator.encoder.") and before[k].is_floating_point()]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    statistics = [k for k in before if k.startswith("generator.") and ".running_" in k]
    assert any(".decoder." in k for k in statistics)  # every norm's statistics stay fixed, not only the encoder's
    assert all(torch.equal(before[k], after[k]) for k in statistics)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log and all(r["alpha_binary"] == cfg.losses.alpha_late for r in log if "alpha_binary" in r)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(("generator.decoder.", "generator.head.")))
    summary = ckpt.read_metadata(model)[1]
    assert summary["init_from"] == str(base) and summary["steps"] == 4
    assert "far" not in summary  # the edit design's demo warning does not go by the redraw distance
    assert json.loads((tmp_path / "run" / "config.json").read_text())["finetune"]["replay"] == "toon:4"
    assert ckpt.load_model(model).config.generator == "edit"


def test_finetune_from_the_command_line_and_its_mistakes(base: Path, newcomer: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(FEXGAN), "finetune", str(base), "--data", f"folder:{newcomer}", "--steps", "2",
                           "--out", str(tmp_path / "cli"), "--quiet", "--set", "run.device=cpu", "--set", "optimiser.batch_size=8"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    for args, words in [(["--data", f"folder:{tmp_path / 'nothing'}"], "does not exist"),
                        (["--data", f"folder:{newcomer}", "--set", "finetune.freeze=generator.elbow"], "freeze")]:
        bad = subprocess.run([str(FEXGAN), "finetune", str(base), *args, "--steps", "2", "--out", str(tmp_path / "bad")],
                             capture_output=True, text=True, timeout=120)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and words in lines[0], bad.stderr
        assert not (tmp_path / "bad").exists()
    with pytest.raises(UserError, match="replay"):
        finetune_config(base, f"folder:{newcomer}", replay="", overrides=["finetune.replay_share=1.5"])


def _random_batch(cfg, classes: torch.Tensor) -> dict[str, torch.Tensor]:
    """A training batch of random images, each with its own expression as the target."""
    n, size = len(classes), cfg.model.image_size
    return {"source": torch.rand(n, 3, size, size) * 2 - 1, "target": torch.rand(n, 3, size, size) * 2 - 1,
            "source_class": classes, "target_class": classes, "source_affect": torch.eye(7)[classes],
            "target_affect": torch.eye(7)[classes]}


def test_the_discriminator_does_not_learn_from_images_without_weight() -> None:
    """A fine-tune's new images get no weight in the discriminator's loss (`d_weight`): a step on a batch
    of only such images leaves the discriminator as it was, while the generator still learns."""
    import copy

    from fexgan.training.step import autocast_for, build_nets, train_step

    cfg = build_config("tiny", overrides=["run.device=cpu", "model.generator=edit", "run.amp=false"])
    nets = build_nets(cfg, torch.device("cpu"))
    n, batch = 4, _random_batch(cfg, torch.tensor([4, 4, 4, 4]))
    d_before, g_before = copy.deepcopy(nets.D.state_dict()), copy.deepcopy(nets.G.state_dict())
    train_step(nets, {**batch, "d_weight": torch.zeros(n)}, cfg, 1.0, autocast_for(cfg, torch.device("cpu")))
    assert all(torch.equal(v, nets.D.state_dict()[k]) for k, v in d_before.items() if v.is_floating_point()
               and "running" not in k)
    assert any(not torch.equal(v, nets.G.state_dict()[k]) for k, v in g_before.items())
    train_step(nets, {**batch, "d_weight": torch.ones(n)}, cfg, 1.0, autocast_for(cfg, torch.device("cpu")))
    assert any(not torch.equal(v, nets.D.state_dict()[k]) for k, v in d_before.items() if "running" not in k)


def test_fixed_norms_keep_their_statistics_whatever_mode_the_networks_were_left_in() -> None:
    """With `fixed_norms` a training step normalises with the generator's running statistics and leaves
    them as they are, even after something (a sample grid, validation) put the generator back in plain
    training mode; without it the same step moves them."""
    from fexgan.training.step import autocast_for, build_nets, train_step

    moved = {}
    for fixed in (True, False):
        cfg = build_config("tiny", overrides=["run.device=cpu", "model.generator=edit", "run.amp=false", "optimiser.ema_decay=0",
                                              f"finetune.fixed_norms={str(fixed).lower()}"])
        torch.manual_seed(0)
        nets = build_nets(cfg, torch.device("cpu"))
        batch = _random_batch(cfg, torch.tensor([0, 3, 4, 6]))
        stats = {k: v.clone() for k, v in nets.G.state_dict().items() if "running_" in k}
        nets.G.train()
        train_step(nets, batch, cfg, 1.0, autocast_for(cfg, torch.device("cpu")))
        moved[fixed] = [k for k, v in stats.items() if not torch.equal(v, nets.G.state_dict()[k])]
        assert stats
    assert moved[True] == [] and moved[False]
