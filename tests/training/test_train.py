"""One training step and short real runs: the losses as used, run folder, determinism, resume, model files."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import losses, same_tensors
from PIL import Image
from safetensors.torch import load_file, save_file

from fexgan.config import TrainConfig
from fexgan.data.pairs import PairSampler, split_indices
from fexgan.data.sources import load_source
from fexgan.devices import bf16_support
from fexgan.errors import UserError
from fexgan.files import checkpoint as ckpt
from fexgan.presets import build_config
from fexgan.training.loop import train
from fexgan.training.monitor import reaches, sample_sources, write_sample_grid
from fexgan.training.runs import prepare_run
from fexgan.training.step import (
    autocast_for,
    build_nets,
    discriminator_view,
    ema_decay_at,
    make_batch,
    precision,
    train_step,
)

FEXGAN = Path(sys.executable).parent / "fexgan"
STEPS, EVERY = 8, 4
CPU = torch.device("cpu")
NO_AUTOCAST = torch.autocast("cpu", enabled=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(face_folder: Path, *overrides: str) -> TrainConfig:
    return build_config("tiny", overrides=[f"data.source=folder:{face_folder}", "run.device=cpu", "run.threads=1", *overrides])


@pytest.fixture(scope="module")
def run_a(tmp_path_factory: pytest.TempPathFactory, face_folder: Path) -> Path:
    """The reference run: 8 steps, checkpoints and sample grids every 4."""
    out = tmp_path_factory.mktemp("runs") / "a"
    train(tiny(face_folder, f"run.steps={STEPS}", f"logging.checkpoint_every={EVERY}", f"logging.sample_every={EVERY}"), out,
          progress=False)
    return out


def interrupted_copy(run: Path, dest: Path) -> Path:
    """`run` as it was right after its step-4 checkpoint, as if it had been stopped there."""
    shutil.copytree(run, dest)
    for f in ["model.safetensors", "loss_curves.png", "samples/final.png", f"samples/step_{STEPS:07d}.png",
              f"checkpoints/step_{STEPS:07d}.safetensors", f"checkpoints/step_{STEPS:07d}.state.pt"]:
        (dest / f).unlink()
    lines = (dest / "log.jsonl").read_text().splitlines(keepends=True)
    (dest / "log.jsonl").write_text("".join(lines[:EVERY]))
    return dest


# ----------------------------------------------------------------------------- one step
@pytest.fixture
def step_setup(face_folder: Path) -> tuple:
    cfg = tiny(face_folder)
    data = load_source(cfg.data.source, 32)
    train_idx, _ = split_indices(data, cfg.data.val_fraction)
    torch.manual_seed(0)
    nets = build_nets(cfg, CPU)
    sampler = PairSampler(data, train_idx, cfg.optimiser.batch_size, seed=0)
    batch = make_batch(data, data.images, *sampler.next_batch(), cfg, torch.Generator().manual_seed(1), CPU)
    return cfg, data, nets, batch


def test_a_source_and_its_l1_target_get_the_same_shift_and_zoom(step_setup: tuple) -> None:
    """With the source itself as its L1 target, the augmented pair must stay identical; and the
    augmentation does move them (the paired version of the paper's crop/jitter)."""
    cfg, data, _, _ = step_setup
    src = torch.arange(cfg.optimiser.batch_size)
    plain = make_batch(data, data.images, src, data.expression[src], src,
                       build_config("tiny", overrides=["data.augment_shift=0", "data.augment_scale=0"]), torch.Generator(), CPU)
    batch = make_batch(data, data.images, src, data.expression[src], src, cfg, torch.Generator().manual_seed(3), CPU)
    assert torch.equal(batch["source"], batch["target"])
    assert not torch.allclose(batch["source"], plain["source"], atol=0.05)
    assert torch.equal(plain["source"], plain["target"])


def test_one_step_changes_every_parameter_of_both_networks(step_setup: tuple) -> None:
    cfg, _, nets, batch = step_setup
    before = {f"{n}.{k}": p.detach().clone() for n, net in (("G", nets.G), ("D", nets.D))
              for k, p in net.named_parameters()}
    out = train_step(nets, batch, cfg, cfg.losses.alpha, NO_AUTOCAST)
    after = {f"{n}.{k}": p.detach() for n, net in (("G", nets.G), ("D", nets.D)) for k, p in net.named_parameters()}
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []
    assert len(before) > 40  # encoder, decoder and discriminator layers are all in there
    assert all(p.requires_grad for p in nets.D.parameters())  # D is unfrozen again after G's update
    assert {"d_total", "g_total", "rec", "kl", "g_adv", "g_cls", "d_real", "d_fake"} <= set(out)
    assert all(torch.isfinite(v) for v in out.values())


BF16 = bf16_support(CPU)


def test_precision_is_bf16_only_where_the_cpu_has_it_and_amp_is_on(face_folder: Path) -> None:
    flags = [f for f in ("avx512_bf16", "amx_bf16") if f in Path("/proc/cpuinfo").read_text()]
    assert (BF16 is not None) == bool(flags)
    assert precision(tiny(face_folder), CPU) == "fp32 (amp=false)"  # the tests' preset: the same numbers everywhere
    on = precision(tiny(face_folder, "run.amp=true"), CPU)
    assert on == (f"bf16 autocast (CPU {' + '.join(flags)})" if flags else "fp32 (no native bf16 on this cpu)")
    assert autocast_for(tiny(face_folder, "run.amp=true"), CPU).fast_dtype == torch.bfloat16


@pytest.mark.skipif(BF16 is None, reason="this CPU has no native bf16 (avx512_bf16 / amx_bf16): the fp32 path is what runs")
def test_a_bf16_step_keeps_weights_optimiser_and_average_in_fp32_and_is_close_to_fp32(face_folder: Path) -> None:
    """Same initial weights and batch, one step each way: bf16 autocast moves the losses by little and
    leaves every stored tensor fp32."""
    results = {}
    for amp in ("false", "true"):
        cfg = tiny(face_folder, f"run.amp={amp}")
        data = load_source(cfg.data.source, 32)
        torch.manual_seed(0)
        nets = build_nets(cfg, CPU)
        batch = make_batch(data, data.images, *PairSampler(data, split_indices(data, 0.2)[0], cfg.optimiser.batch_size, seed=0
                                                           ).next_batch(), cfg, torch.Generator().manual_seed(1), CPU)
        torch.manual_seed(1)
        results[amp] = train_step(nets, batch, cfg, cfg.losses.alpha, autocast_for(cfg, CPU), ema_decay=0.5)
    assert autocast_for(cfg, CPU).fast_dtype == torch.bfloat16 and autocast_for(cfg, CPU)._enabled
    stored = [*nets.G.state_dict().values(), *nets.D.state_dict().values(), *nets.G_ema.state_dict().values(),
              *(v for opt in (nets.opt_g, nets.opt_d) for st in opt.state.values() for v in st.values()
                if torch.is_tensor(v) and v.numel() > 1)]
    assert {t.dtype for t in stored if t.is_floating_point()} == {torch.float32}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in results["true"].values())
    for k in ("d_total", "g_adv", "g_cls", "rec", "kl"):
        assert results["true"][k] == pytest.approx(float(results["false"][k]), rel=0.03), k


@pytest.mark.skipif(BF16 is None, reason="this CPU has no native bf16")
def test_a_bf16_run_trains_without_tripping_the_divergence_guard(face_folder: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    model = train(tiny(face_folder, "run.amp=true", "run.steps=40", "optimiser.lr=1e-3"), tmp_path / "run", progress=False)
    assert "precision: bf16 autocast" in capsys.readouterr().out
    log = losses(tmp_path / "run")
    assert len(log) == 40 and "rolled back" not in capsys.readouterr().err
    assert log[-1]["rec"] < 0.8 * log[0]["rec"]  # it learns
    assert ckpt.read_metadata(model)[1]["precision"].startswith("bf16")


def _freeze_learning_rate(nets) -> None:
    for opt in (nets.opt_g, nets.opt_d):
        for group in opt.param_groups:
            group["lr"] = 0.0


def test_every_logged_loss_is_recomputed_from_the_networks_and_the_right_labels(step_setup: tuple) -> None:
    """Each loss of one step, recomputed by hand from the networks' outputs and the batch: real images
    are classified against the SOURCE expression, fakes against the TARGET one, and the generator's
    total weighs its terms by alpha_binary, alpha, beta and gamma (eqs. 1-7). Sources and targets all
    differ, so a swapped label changes the numbers."""
    cfg, _, nets, batch = step_setup
    n_cls = cfg.model.num_classes
    batch["target_class"] = (batch["source_class"] + 1 + torch.arange(len(batch["source_class"])) % 3) % n_cls
    batch["target_affect"] = torch.nn.functional.one_hot(batch["target_class"], n_cls).float()
    _freeze_learning_rate(nets)  # no update: the networks after the step are the networks of the step
    torch.manual_seed(5)
    logged = train_step(nets, batch, cfg, 0.3, NO_AUTOCAST)
    torch.manual_seed(5)  # the same dropout masks and latent noise
    bce, ce = torch.nn.functional.binary_cross_entropy_with_logits, torch.nn.functional.cross_entropy
    with torch.no_grad():
        fake, mu, log_sigma, _ = nets.G(batch["source"], batch["source_affect"], batch["target_affect"])
        real_logit, real_cls = nets.D(batch["source"])
        fake_logit, fake_cls = nets.D(fake)
    ones, zeros = torch.ones_like(real_logit), torch.zeros_like(real_logit)
    want = {"d_real": bce(real_logit, ones) + ce(real_cls, batch["source_class"]),
            "d_fake": bce(fake_logit, zeros) + ce(fake_cls, batch["target_class"]),
            "d_cls_real": ce(real_cls, batch["source_class"]),
            "g_adv": bce(fake_logit, ones), "g_cls": ce(fake_cls, batch["target_class"]),
            "kl": (-0.5 * (1 + 2 * log_sigma - mu ** 2 - torch.exp(2 * log_sigma)).sum(1)).mean(),
            "rec": (fake - batch["target"]).abs().mean()}
    want["d_total"] = want["d_real"] + want["d_fake"]
    want["d_acc_real"], want["d_acc_fake"] = (real_logit > 0).float().mean(), (fake_logit < 0).float().mean()
    want["d_acc_cls"] = (real_cls.argmax(1) == batch["source_class"]).float().mean()
    want["g_total"] = (0.3 * want["g_adv"] + cfg.losses.alpha * want["g_cls"] + cfg.losses.beta * want["kl"]
                       + cfg.losses.gamma * want["rec"])
    for key, value in want.items():
        torch.testing.assert_close(logged[key], value.float(), rtol=1e-5, atol=1e-6, msg=key)


def test_with_d_augment_the_discriminator_judges_shifted_degraded_views_of_reals_and_fakes(step_setup: tuple) -> None:
    """DiffAugment: every image the discriminator sees, real or fake, is a random view of it (shift,
    zoom, blur or noise), differentiable so that the generator's terms reach it through the view; the
    logged losses are those of the views, drawn in the step's order (fake, then real)."""
    _, _, nets, batch = step_setup
    cfg = build_config("tiny", overrides=["losses.d_augment=true"])
    assert discriminator_view(batch["source"], build_config("tiny")) is batch["source"]
    image = batch["source"].clone().requires_grad_(True)
    view = discriminator_view(image, cfg)
    view.sum().backward()
    assert view.shape == image.shape and not torch.allclose(view, image, atol=0.05) and image.grad.abs().sum() > 0
    _freeze_learning_rate(nets)
    torch.manual_seed(7)
    logged = train_step(nets, batch, cfg, 1.0, NO_AUTOCAST)
    torch.manual_seed(7)
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        fake = nets.G(batch["source"], batch["source_affect"], batch["target_affect"])[0]
        seen_fake = discriminator_view(fake, cfg)
        _, real_cls = nets.D(discriminator_view(batch["source"], cfg))
        _, fake_cls = nets.D(seen_fake)
        _, plain_cls = nets.D(batch["source"])
    torch.testing.assert_close(logged["d_cls_real"], ce(real_cls, batch["source_class"]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logged["g_cls"], ce(fake_cls, batch["target_class"]), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(logged["d_cls_real"], ce(plain_cls, batch["source_class"]))


def test_without_kl_and_l1_the_adversarial_and_class_terms_still_train_the_generator(step_setup: tuple) -> None:
    """gamma = beta = 0: what is left of the generator's loss reaches it only through the discriminator's
    pass over the fakes; every generator weight gets a gradient and moves."""
    cfg, _, nets, batch = step_setup
    cfg = build_config("tiny", overrides=["losses.gamma=0", "losses.beta=0"])
    before = {k: p.detach().clone() for k, p in nets.G.named_parameters()}
    train_step(nets, batch, cfg, cfg.losses.alpha, NO_AUTOCAST)
    no_grad = [k for k, p in nets.G.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert no_grad == []
    assert [k for k, p in nets.G.named_parameters() if torch.equal(p, before[k])] == []


def test_reconstruction_loss_falls_over_a_few_dozen_steps(face_folder: Path, step_setup: tuple) -> None:
    _, _, nets, batch = step_setup
    cfg = tiny(face_folder, "losses.gamma=100", "optimiser.lr=1e-3")
    for opt in (nets.opt_g, nets.opt_d):
        for group in opt.param_groups:
            group["lr"] = cfg.optimiser.lr
    rec = [train_step(nets, batch, cfg, cfg.losses.alpha, NO_AUTOCAST)["rec"].item() for _ in range(30)]
    first, last = sum(rec[:5]) / 5, sum(rec[-5:]) / 5
    assert last < 0.85 * first, rec


def test_model_file_round_trip_reproduces_both_networks(step_setup: tuple, tmp_path: Path) -> None:
    cfg, _, nets, batch = step_setup
    train_step(nets, batch, cfg, cfg.losses.alpha, NO_AUTOCAST)  # batch-norm statistics are no longer the defaults
    ckpt.save_model(tmp_path / "m.safetensors", nets.G, nets.D, cfg.model, {"note": "x"})
    loaded = ckpt.load_model(tmp_path / "m.safetensors")
    assert loaded.config == cfg.model and loaded.summary == {"note": "x"}
    if cfg.run.channels_last:  # compare in the layout training uses: NHWC kernels round differently (~1e-15)
        loaded.generator.to(memory_format=torch.channels_last), loaded.discriminator.to(memory_format=torch.channels_last)
    nets.G.eval(), nets.D.eval()
    with torch.no_grad():
        a = nets.G.transfer(batch["source"], batch["source_affect"], batch["target_affect"])
        b = loaded.generator.transfer(batch["source"], batch["source_affect"], batch["target_affect"])
        assert torch.equal(a, b)
        assert all(torch.equal(x, y) for x, y in zip(nets.D(batch["source"]), loaded.discriminator(batch["source"])))


def test_the_moving_average_follows_the_trained_generator(step_setup: tuple) -> None:
    cfg, _, nets, batch = step_setup
    start = {k: v.clone() for k, v in nets.G_ema.state_dict().items()}
    train_step(nets, batch, cfg, cfg.losses.alpha, NO_AUTOCAST, ema_decay=0.75)
    trained = nets.G.state_dict()
    for k, v in nets.G_ema.state_dict().items():
        if v.is_floating_point():  # weights and batch-norm statistics: 0.75 old + 0.25 new
            torch.testing.assert_close(v, 0.75 * start[k] + 0.25 * trained[k])
        else:
            assert torch.equal(v, trained[k])
    assert any(not torch.equal(v, trained[k]) for k, v in nets.G_ema.state_dict().items())
    assert not any(p.requires_grad for p in nets.G_ema.parameters()) and not nets.G_ema.training
    assert ema_decay_at(cfg, 0) == pytest.approx(0.1) and ema_decay_at(cfg, 10**6) == cfg.optimiser.ema_decay
    # a run from a model's weights (a fine-tune) keeps that model's average: no warm-up to shed
    started = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, init_from="toon-any-64"))
    assert ema_decay_at(started, 0) == cfg.optimiser.ema_decay


def test_model_files_hold_the_moving_average_and_resume_restores_both(run_a: Path, face_folder: Path,
                                                                       tmp_path: Path) -> None:
    state = ckpt.load_state(run_a / "checkpoints" / f"step_{STEPS:07d}.state.pt")
    averaged = ckpt.load_model(run_a / "model.safetensors").generator.state_dict()
    raw = state["generator_train"]
    assert set(raw) == set(averaged) and any(not torch.equal(raw[k], averaged[k]) for k in raw)
    train(tiny(face_folder, f"run.steps={STEPS}", "optimiser.ema_decay=0"), tmp_path / "raw", progress=False)
    assert "generator_train" not in ckpt.load_state(tmp_path / "raw" / "checkpoints" / f"step_{STEPS:07d}.state.pt")
    with pytest.raises(UserError, match="without a moving average.*ema_decay=0"):
        train(tiny(face_folder, f"run.steps={STEPS + 2}"), tmp_path / "raw", resume=True, progress=False)


def test_a_run_starts_from_a_model_files_weights_with_a_fresh_optimiser(run_a: Path, face_folder: Path,
                                                                         tmp_path: Path) -> None:
    """`init_from`: step 0 holds the file's weights (generator, its average and the discriminator), the
    optimisers start empty, and the run records where it started; another architecture is refused."""
    out = tmp_path / "from_a"
    train(tiny(face_folder, "run.steps=2", f"finetune.init_from={run_a}"), out, progress=False)
    start = ckpt.read_tensors(out / "checkpoints" / "step_0000000.safetensors")
    source = ckpt.read_tensors(run_a / "model.safetensors")
    assert start.keys() == source.keys() and all(torch.equal(start[k], source[k]) for k in source)
    state = ckpt.load_state(out / "checkpoints" / "step_0000000.state.pt")
    assert state["opt_g"]["state"] == {} and state["opt_d"]["state"] == {} and state["step"] == 0
    assert all(torch.equal(v, source[f"generator.{k}"]) for k, v in state["generator_train"].items())
    assert json.loads((out / "config.json").read_text())["finetune"]["init_from"] == str(run_a)
    assert ckpt.read_metadata(out / "model.safetensors")[1]["init_from"] == str(run_a)
    fresh = tmp_path / "fresh"
    train(tiny(face_folder, "run.steps=2"), fresh, progress=False)
    assert losses(out)[0]["rec"] != losses(fresh)[0]["rec"]  # the weights, not a fresh start, trained
    with pytest.raises(UserError, match=r"init_from .* another model than this run's: model\.width=0\.0625 \(run: 0\.125\)"):
        train(tiny(face_folder, "run.steps=2", f"finetune.init_from={run_a}", "model.width=0.125"), tmp_path / "wide", progress=False)


# ----------------------------------------------------------------------------- whole runs
def test_run_folder_holds_everything(run_a: Path, face_folder: Path) -> None:
    for name in ["config.json", "data.json", "log.jsonl", "model.safetensors", "loss_curves.png",
                 "samples/final.png", f"samples/step_{EVERY:07d}.png", "checkpoints/step_0000004.safetensors",
                 "checkpoints/step_0000004.state.pt", "checkpoints/step_0000008.safetensors",
                 "checkpoints/step_0000008.state.pt"]:
        assert (run_a / name).is_file(), name
    assert list((run_a / "tb").glob("events.out.tfevents.*"))
    umask = os.umask(0)
    os.umask(umask)
    for name in ["config.json", "model.safetensors", "checkpoints/step_0000008.safetensors",
                 "checkpoints/step_0000008.state.pt"]:  # written atomically, yet with the usual permissions
        assert (run_a / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    cfg = TrainConfig.from_dict(json.loads((run_a / "config.json").read_text()))
    assert cfg == tiny(face_folder, f"run.steps={STEPS}", f"logging.checkpoint_every={EVERY}", f"logging.sample_every={EVERY}")

    split = json.loads((run_a / "data.json").read_text())
    data = load_source(cfg.data.source, 32)
    train_idx, val_idx = split_indices(data, cfg.data.val_fraction, cfg.run.seed)
    assert split["train"] == [data.names[i] for i in train_idx] and split["val"] == [data.names[i] for i in val_idx]
    assert len(split["train"]) == 42 and len(split["val"]) == 21 and split["images"] == 63

    records = losses(run_a)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert all(r["alpha_binary"] == (cfg.losses.alpha if r["step"] <= STEPS // 2 else cfg.losses.alpha_late) for r in records)
    # the final grid: a row per identity, the input then every expression
    with Image.open(run_a / "samples" / "final.png") as grid:
        assert grid.width > 8 * 32 and grid.height > 3 * 32
    with Image.open(run_a / "loss_curves.png") as plot:
        assert plot.width > 400


def test_the_logged_totals_are_their_weighted_terms_before_and_after_the_late_weight_drops(run_a: Path) -> None:
    """At every record (one per step in the tiny preset): d_total = d_real + d_fake and g_total =
    alpha_binary * g_adv + alpha * g_cls + beta * kl + gamma * rec, with alpha_binary the paper's
    schedule (alpha until late_fraction of the run, alpha_late after)."""
    cfg = build_config(base=json.loads((run_a / "config.json").read_text()))
    records = losses(run_a)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for r in records:
        late = (r["step"] - 1) / STEPS >= cfg.losses.late_fraction
        assert r["alpha_binary"] == (cfg.losses.alpha_late if late else cfg.losses.alpha), r
        total = r["alpha_binary"] * r["g_adv"] + cfg.losses.alpha * r["g_cls"] + cfg.losses.beta * r["kl"] + cfg.losses.gamma * r["rec"]
        assert r["g_total"] == pytest.approx(total, abs=2e-3), r   # logged values are rounded to 5 decimals
        assert r["d_total"] == pytest.approx(r["d_real"] + r["d_fake"], abs=2e-5), r
    assert {r["alpha_binary"] for r in records} == {cfg.losses.alpha, cfg.losses.alpha_late}


def test_two_runs_with_the_same_seed_log_the_same_losses(run_a: Path, face_folder: Path, tmp_path: Path) -> None:
    train(tiny(face_folder, f"run.steps={STEPS}"), tmp_path / "b", progress=False)  # no periodic checkpoints
    assert losses(tmp_path / "b", validation=False) == losses(run_a, validation=False)
    assert same_tensors(tmp_path / "b" / "model.safetensors", run_a / "model.safetensors")
    train(tiny(face_folder, "run.steps=2", "run.seed=1"), tmp_path / "c", progress=False)
    assert losses(tmp_path / "c") != losses(run_a)[:2]


def test_resume_in_a_fresh_process_continues_exactly(run_a: Path, tmp_path: Path) -> None:
    run = interrupted_copy(run_a, tmp_path / "resumed")
    (run / "checkpoints" / "step_0000006.safetensors").write_bytes(b"half-written")  # skipped, not trusted
    proc = subprocess.run([str(FEXGAN), "train", "--resume", str(run), "--quiet"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "warning: skipping checkpoint step_0000006" in proc.stderr and "from step 4" in proc.stdout
    assert losses(run) == losses(run_a)
    assert same_tensors(run / "model.safetensors", run_a / "model.safetensors")


def test_resume_mid_log_window_logs_true_means(run_a: Path, face_folder: Path, tmp_path: Path) -> None:
    """Resumed at step 4 with log_every=3: records at 6 (steps 5-6) and 8 (steps 7-8, the end)."""
    run = interrupted_copy(run_a, tmp_path / "resumed")
    train(tiny(face_folder, f"run.steps={STEPS}", "logging.log_every=3"), run, resume=True, progress=False)
    ref, got = losses(run_a), losses(run)[EVERY:]
    assert [r["step"] for r in got] == [6, 8]
    for record, (a, b) in zip(got, [(4, 5), (6, 7)]):
        for key in ("rec", "g_total", "d_total"):
            assert record[key] == pytest.approx((ref[a][key] + ref[b][key]) / 2, abs=2e-5)


def test_model_file_alone_reproduces_the_final_samples(run_a: Path, tmp_path: Path) -> None:
    loaded = ckpt.load_model(run_a / "model.safetensors")
    cfg = TrainConfig.from_dict(json.loads((run_a / "config.json").read_text()))
    assert loaded.config == cfg.model and loaded.summary["steps"] == STEPS
    assert loaded.summary["far"] > 0  # the paper design redraws faces: its demo threshold is calibrated
    assert same_tensors(run_a / "model.safetensors", run_a / f"checkpoints/step_{STEPS:07d}.safetensors")
    data = load_source(cfg.data.source, 32)
    _, val_idx = split_indices(data, cfg.data.val_fraction, cfg.run.seed)
    write_sample_grid(loaded.generator, data, sample_sources(data, val_idx), CPU, tmp_path / "again.png",
                      f"final (step {STEPS})")
    with Image.open(run_a / "samples" / "final.png") as a, Image.open(tmp_path / "again.png") as b:
        assert a.size == b.size and a.tobytes() == b.tobytes()


def test_broken_model_and_state_files_are_user_errors(run_a: Path, tmp_path: Path) -> None:
    good = (run_a / "model.safetensors").read_bytes()
    cases = {"missing.safetensors": None, "garbage.safetensors": b"\x00garbage" * 50, "empty.safetensors": b"",
             "truncated.safetensors": good[: len(good) // 2]}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError):
            ckpt.load_model(tmp_path / name)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))  # safetensors, but not ours
    with pytest.raises(UserError, match="not a fexgan model"):
        ckpt.load_model(tmp_path / "other.safetensors")
    # weights that do not match the configuration stored beside them
    tensors = load_file(str(run_a / "model.safetensors"))
    cfg = json.loads(ckpt.safe_open(str(run_a / "model.safetensors"), "pt").metadata()["model_config"])
    save_file(tensors, str(tmp_path / "wide.safetensors"),
              {"format": f"{ckpt.FORMAT}1", "model_config": json.dumps({**cfg, "width": 0.125})})
    with pytest.raises(UserError, match="shape"):
        ckpt.load_model(tmp_path / "wide.safetensors")

    (tmp_path / "bad.state.pt").write_bytes(b"nope")
    with pytest.raises(UserError):
        ckpt.load_state(tmp_path / "bad.state.pt")
    torch.save({"code": Path("x")}, tmp_path / "pickled.state.pt")  # an arbitrary object: refused
    with pytest.raises(UserError, match="refusing"):
        ckpt.load_state(tmp_path / "pickled.state.pt")


def test_user_mistakes_write_nothing(run_a: Path, face_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="need at least"):
        train(tiny(face_folder, "optimiser.batch_size=40"), tmp_path / "big", progress=False)
    assert not (tmp_path / "big").exists()
    before = {p: p.stat().st_mtime_ns for p in run_a.rglob("*")}
    with pytest.raises(UserError, match="already holds a run"):
        train(tiny(face_folder, "run.steps=1"), run_a, progress=False)
    assert {p: p.stat().st_mtime_ns for p in run_a.rglob("*")} == before
    with pytest.raises(UserError, match="not a run folder"):
        prepare_run(tmp_path, tiny(face_folder), resume=True)


def test_a_run_never_imports_tensorflow(tmp_path: Path) -> None:
    """TensorBoard's event files are written without TensorFlow, also where the `keras` extra installed it."""
    code = ("import sys; from fexgan.presets import build_config; from fexgan.training.loop import train; "
            f"train(build_config('tiny', overrides=['run.steps=2', 'run.device=cpu', 'run.threads=1']), {str(tmp_path / 'run')!r}, "
            "progress=False); print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False" and "TensorFlow" not in proc.stderr
    assert list((tmp_path / "run" / "tb").iterdir())  # the event file is still written


def test_a_quality_target_ends_the_run_at_the_first_checkpoint_that_reaches_it(tmp_path: Path) -> None:
    """`run.until` on toon data (the renderer's truth): a target every checkpoint meets ends the run at
    the first periodic one; one no checkpoint meets leaves the run to its length, and both say so."""
    toon_run = ["data.source=toon:4", "run.device=cpu", "run.threads=1", "run.steps=12", "logging.checkpoint_every=4"]
    easy = train(build_config("tiny", overrides=[*toon_run, "run.until=gain=-100"]), tmp_path / "easy", progress=False)
    summary = ckpt.read_metadata(easy)[1]
    assert (summary["steps"], summary["ended_by"], summary["until"]) == (4, "quality target", "gain=-100")
    hard = train(build_config("tiny", overrides=[*toon_run, "run.until=gain=100"]), tmp_path / "hard", progress=False)
    summary = ckpt.read_metadata(hard)[1]
    assert (summary["steps"], summary["ended_by"]) == (12, "steps") and "val_psnr_copy" in summary
    log = [json.loads(line) for line in (tmp_path / "hard" / "log.jsonl").read_text().splitlines()]
    assert all(0 <= r[k] <= 1 for r in log for k in ("d_acc_real", "d_acc_fake", "d_acc_cls"))


def test_quality_targets_are_checked_before_any_work(face_folder: Path, tmp_path: Path) -> None:
    assert reaches({"val_psnr": 25.0, "val_psnr_copy": 21.0, "val_judge": 0.96}, {"gain": 3, "judge": 0.95})
    assert not reaches({"val_psnr": 25.0, "val_psnr_copy": 21.0, "val_judge": 0.94}, {"gain": 3, "judge": 0.95})
    assert not reaches({"val_psnr": 23.0, "val_psnr_copy": 21.0}, {"gain": 3})
    assert not reaches({"val_l1": 0.1}, {"judge": 0.5})  # no judge's reading: not reached
    for until, words in (("gain", "key=number"), ("psnr=3", "key=number"), ("gain=inf", "key=number")):
        with pytest.raises(UserError, match=words):
            build_config("tiny", overrides=[f"run.until={until}"])
    with pytest.raises(UserError, match="checkpoint_every"):
        build_config("tiny", overrides=["run.until=gain=3", "logging.checkpoint_every=0"])
    with pytest.raises(UserError, match="ground truth|truth"):  # a folder of faces has no renderer's truth
        train(tiny(face_folder, "run.steps=4", "logging.checkpoint_every=2", "run.until=gain=3"), tmp_path / "r",
              progress=False)
    assert not (tmp_path / "r").exists()  # refused before any work: no run folder
