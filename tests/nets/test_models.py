"""Network shapes at every size and width, each part alone, and the 128 px reference layout."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fexgan.config import IMAGE_SIZES, ModelConfig
from fexgan.nets.designs import build_generator
from fexgan.nets.networks import (
    Decoder,
    Discriminator,
    Dropout,
    EditGenerator,
    Encoder,
    Generator,
)
from fexgan.presets import PAPER_NUMERICS

B = 2


def _affect(n: int, classes: int = 7) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.arange(n) % classes, classes).float()


@pytest.mark.parametrize("width", [0.25, 1.0])
@pytest.mark.parametrize("size", IMAGE_SIZES)
@torch.no_grad()
def test_every_network_runs_alone_at_every_size(size: int, width: float) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=size, width=width, latent_dim=32)
    x = torch.rand(B, 3, size, size) * 2 - 1

    enc = Encoder(cfg).eval()
    mu, log_sigma = enc(x, _affect(B))
    assert mu.shape == log_sigma.shape == (B, 32)

    dec = Decoder(cfg).eval()
    y = dec(torch.randn(B, 32), _affect(B))
    assert y.shape == (B, 3, size, size)
    assert y.min() >= -1 and y.max() <= 1  # tanh output

    gen = Generator(cfg).eval()
    out, g_mu, g_ls, parts = gen(x, _affect(B), _affect(B))
    assert parts == {}
    assert out.shape == gen.transfer(x, _affect(B), _affect(B)).shape == (B, 3, size, size)
    assert g_mu.shape == g_ls.shape == (B, 32)

    disc = Discriminator(cfg).eval()
    real_fake, cls = disc(x)
    assert real_fake.shape == (B,)
    assert cls.shape == (B, 7)
    # the encoder has log2(size) stride-2 blocks down to 1 px; the decoder mirrors it
    assert len(enc.blocks) == size.bit_length() - 1
    assert len(dec.blocks) + 1 == len(enc.blocks)


def test_generator_is_its_encoder_then_its_decoder() -> None:
    """The joined generator shares weights with its parts, so each part reproduces it alone."""
    torch.manual_seed(0)
    gen = Generator(ModelConfig(image_size=32, width=0.25, latent_dim=16)).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    src, tgt = _affect(3), _affect(3).roll(1, 0)
    with torch.no_grad():
        joined = gen.transfer(x, src, tgt)
        mu, log_sigma = gen.encoder(x, src)
        mu2, ls2 = gen.encode(x, src)
        alone = gen.decoder(mu2, tgt)
        other = gen.decode(mu2, src, x)
        _, mu3, ls3, _ = gen(x, src, tgt)  # training's pass: a sampled latent, the same distribution
    assert torch.equal(mu, mu2) and torch.equal(log_sigma, ls2) and torch.equal(mu, mu3) and torch.equal(ls2, ls3)
    assert torch.equal(joined, alone) and torch.equal(gen.decode(mu2, tgt), alone)
    # the target affect matters: another target gives another image (outputs are tiny at init)
    assert (other - alone).abs().max() > 0.1 * alone.abs().max()


def test_sampled_latent_follows_sigma() -> None:
    mu, log_sigma = torch.zeros(20000, 2), torch.log(torch.tensor([[0.5, 2.0]])).expand(20000, 2)
    z = Generator.reparameterize(mu, log_sigma, torch.Generator().manual_seed(0))
    assert torch.allclose(z.std(0), torch.tensor([0.5, 2.0]), rtol=0.05)


def test_sampled_latent_has_the_mean_it_is_given() -> None:
    mu = torch.tensor([[3.0, -2.0]]).expand(20000, 2)
    z = Generator.reparameterize(mu, torch.full((20000, 2), math.log(0.5)), torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), torch.tensor([3.0, -2.0]), atol=0.02)
    assert torch.allclose(z.std(0), torch.tensor([0.5, 0.5]), rtol=0.05)


@pytest.mark.parametrize("classes, latent", [(("a", "b", "c"), 8), (tuple("abcdefghij"), 64)])
def test_number_of_classes_and_latent_size_follow_the_config(classes: tuple[str, ...], latent: int) -> None:
    cfg = ModelConfig(image_size=32, width=0.125, latent_dim=latent, classes=classes)
    gen, disc = Generator(cfg).eval(), Discriminator(cfg).eval()
    x = torch.zeros(2, 3, 32, 32)
    a = _affect(2, len(classes))
    with torch.no_grad():
        out, mu, _, _ = gen(x, a, a)
        _, cls = disc(x)
    assert mu.shape == (2, latent) and out.shape == (2, 3, 32, 32) and cls.shape == (2, len(classes))


# ---------------------------------------------------------------------------- reference layout
ENCODER_TABLE = [(128, 64, False, True), (256, 32, True, True), (512, 16, True, True), (512, 8, True, True),
                 (512, 4, True, True), (512, 2, True, True), (128, 1, True, False)]   # (ch, size, BN, LeakyReLU)
DECODER_TABLE = [(512, 2, True), (512, 4, True), (512, 8, True), (512, 16, False), (256, 32, False),
                 (128, 64, False)]                                                   # (ch, size, dropout)


def _record_shapes(modules: list[nn.Module]) -> tuple[list[tuple[int, ...]], list]:
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape))) for m in modules]
    return shapes, hooks


@pytest.fixture(scope="module")
def paper_model() -> tuple[Generator, Discriminator]:
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=128, width=1.0, latent_dim=128)
    return Generator(cfg).eval(), Discriminator(cfg).eval()


def test_encoder_matches_the_reference_table(paper_model: tuple[Generator, Discriminator]) -> None:
    enc = paper_model[0].encoder
    plane = enc.affect_plane[0]
    assert isinstance(plane, nn.Linear) and (plane.in_features, plane.out_features) == (7, 128 * 128)
    assert isinstance(enc.affect_plane[1], nn.ReLU)
    shapes, hooks = _record_shapes(list(enc.blocks))
    with torch.no_grad():
        enc(torch.zeros(2, 3, 128, 128), _affect(2))
    for h in hooks:
        h.remove()
    assert shapes == [(2, ch, s, s) for ch, s, _, _ in ENCODER_TABLE]
    for block, (ch, _, bn, act) in zip(enc.blocks, ENCODER_TABLE):
        conv = block[0]
        assert isinstance(conv, nn.Conv2d) and conv.bias is None
        assert conv.kernel_size == (4, 4) and conv.stride == (2, 2) and conv.out_channels == ch
        assert any(isinstance(m, nn.BatchNorm2d) for m in block) == bn
        assert any(isinstance(m, nn.LeakyReLU) for m in block) == act
    assert enc.blocks[0][0].in_channels == 4  # RGB + the affect plane
    assert (enc.mu.in_features, enc.mu.out_features) == (128, 128)
    assert (enc.log_sigma.in_features, enc.log_sigma.out_features) == (128, 128)
    assert torch.count_nonzero(enc.log_sigma.weight) == 0  # log-sigma starts at zero weights


def test_decoder_matches_the_reference_table(paper_model: tuple[Generator, Discriminator]) -> None:
    dec = paper_model[0].decoder
    lin = [m for m in dec.affect_in if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(7, 64), (64, 256)]
    assert isinstance(dec.affect_in[-1], nn.ReLU) and not isinstance(dec.affect_in[1], nn.ReLU)
    assert (dec.z_in[0].in_features, dec.z_in[0].out_features) == (128, 256)
    shapes, hooks = _record_shapes([*dec.blocks, dec.out])
    with torch.no_grad():
        dec(torch.zeros(2, 128), _affect(2))
    for h in hooks:
        h.remove()
    assert shapes == [(2, ch, s, s) for ch, s, _ in DECODER_TABLE] + [(2, 3, 128, 128)]
    assert dec.blocks[0][0].in_channels == 512  # z (256) and affect (256) concatenated at 1 x 1
    for block, (_, _, dropout) in zip(dec.blocks, DECODER_TABLE):
        assert isinstance(block[0], nn.ConvTranspose2d) and block[0].bias is None
        assert isinstance(block[1], nn.BatchNorm2d) and isinstance(block[-1], nn.ReLU)
        drops = [m for m in block if isinstance(m, Dropout)]
        assert len(drops) == int(dropout) and all(d.p == 0.5 for d in drops)
    assert isinstance(dec.out[0], nn.ConvTranspose2d) and dec.out[0].bias is not None
    assert isinstance(dec.out[1], nn.Tanh)


def test_discriminator_matches_the_reference(paper_model: tuple[Generator, Discriminator]) -> None:
    disc = paper_model[1]
    convs = [m for m in disc.features.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 512]
    assert all(c.bias is None and c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert [any(isinstance(m, nn.BatchNorm2d) for m in blk) for blk in disc.features[:3]] == [False, True, True]
    shapes, hooks = _record_shapes([disc.features[2]])
    with torch.no_grad():
        disc(torch.zeros(2, 3, 128, 128))
    hooks[0].remove()
    assert shapes == [(2, 512, 16, 16)]
    assert disc.real_fake.in_features == disc.classifier.in_features == 16 * 16 * 512
    assert (disc.real_fake.out_features, disc.classifier.out_features) == (1, 7)


def test_no_dropout_when_disabled() -> None:
    dec = Decoder(ModelConfig(image_size=64, width=0.25, dropout=0.0))
    assert not any(isinstance(m, (Dropout, nn.Dropout)) for m in dec.modules())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_is_inverted_dropout_like_torchs(dtype: torch.dtype) -> None:
    """Zeros with probability p, the rest scaled by 1 / (1 - p) (so the mean stays), gradients through
    the kept units only, and the identity in eval mode."""
    torch.manual_seed(0)
    drop, x = Dropout(0.3), torch.ones(200_000, dtype=dtype, requires_grad=True)
    y = drop(x)
    zero = (y == 0).float().mean().item()
    assert 0.295 < zero < 0.305 and y.dtype == dtype
    assert torch.allclose(y[y != 0].float(), torch.tensor(1 / 0.7), rtol=1e-2)
    assert abs(y.float().mean().item() - 1.0) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)
    assert torch.equal(drop.eval()(x), x)


def test_width_scales_every_channel_count() -> None:
    half = Generator(ModelConfig(image_size=128, width=0.5))
    convs = [m.out_channels for m in half.encoder.blocks.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [ch // 2 for ch, *_ in ENCODER_TABLE]
    deconvs = [m.out_channels for m in half.decoder.blocks.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert deconvs == [ch // 2 for ch, *_ in DECODER_TABLE]


# ----------------------------------------------------------------------------- the edit design
def test_the_edit_design_changes_the_source_and_draws_alone_without_one() -> None:
    """decode(z, affect, source) = source + change; a new model hands back its input exactly; without a
    source it is the paper's decoder alone; the change depends on the source and on the target affect."""
    torch.manual_seed(0)
    cfg = ModelConfig(generator="edit", image_size=32, width=0.25, latent_dim=16)
    gen = build_generator(cfg).eval()
    assert isinstance(gen, EditGenerator) and isinstance(build_generator(ModelConfig()), Generator)
    x, a = torch.rand(3, 3, 32, 32) * 2 - 1, _affect(3)
    with torch.no_grad():
        z = gen.encode(x, a)[0]
        assert torch.equal(gen.decode(z, a), gen.decoder(z, a))
        assert torch.equal(gen.decode(z, a, x), x)  # the change starts at zero
        for proj in gen.skips.projections:  # ... and so do the skips: a new model's decoder is the paper's
            assert not proj.weight.any()
        for p in gen.parameters():  # a trained model's weights are nowhere zero
            p.add_(torch.randn_like(p) * 0.05)
        edited, parts = gen.draw(z, a, x)
        assert parts == {} and edited.shape == x.shape and edited.abs().max() <= 1
        assert torch.equal(gen.transfer(x, a, a), gen.decode(gen.encode(x, a)[0], a, x))
        assert not torch.allclose(edited, x, atol=1e-3)
        assert not torch.allclose(edited, gen.decode(z, a, x.flip(-1)).flip(-1), atol=1e-3)  # it sees the source
        assert not torch.allclose(edited, gen.decode(z, a.roll(1, dims=1), x), atol=1e-3)  # ... and the target
    train_parts = gen.train()(x, a, a)[3]
    assert set(train_parts) == {"alone"} and train_parts["alone"].shape == (1, 3, 32, 32)
    assert gen(x, a, a, parts=False)[3] == {}  # the steps between `alone_every`-th ones


def test_the_edit_design_adds_only_its_skips_and_head_to_the_papers_weights() -> None:
    cfg = ModelConfig(image_size=64, width=0.25)
    paper, edit = build_generator(cfg), build_generator(ModelConfig(**{**cfg.to_dict(), "generator": "edit"}))
    extra = {k.split(".")[0] for k in set(edit.state_dict()) - set(paper.state_dict())}
    assert extra == {"head", "skips"}
    assert set(paper.state_dict()) <= set(edit.state_dict())


@torch.no_grad()
def test_the_configured_numerics_reach_every_layer() -> None:
    """The reference's numerics (the `paper` preset's) in every LeakyReLU, batch norm and initialiser, the
    edit design's extra modules included; the defaults stay DCGAN's."""
    small = {"image_size": 32, "width": 0.25, "latent_dim": 16}
    torch.manual_seed(0)
    cfg = ModelConfig(**small, **PAPER_NUMERICS)
    G, D, edit = Generator(cfg), Discriminator(cfg), EditGenerator(cfg)
    for net in (G, D, edit):
        assert {m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)} == {0.3}
        norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(m.eps == 1e-3 and m.momentum == 0.01 and bool((m.weight == 1).all()) for m in norms)
    # Glorot-uniform where the reference names no initialiser: within +-sqrt(6 / (fan_in + fan_out)), spread as uniform
    for layer in (G.encoder.mu, G.decoder.affect_in[0], D.real_fake, D.classifier):
        bound = math.sqrt(6 / sum(layer.weight.shape))
        assert float(layer.weight.abs().max()) <= bound and not layer.bias.any()
        assert float(layer.weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.2)
    # N(0, 0.02) where the reference says so: its other dense layers and every convolution
    for layer in (G.encoder.affect_plane[0], G.decoder.z_in[0], G.decoder.affect_in[1], G.encoder.blocks[2][0],
                  G.decoder.blocks[0][0], D.features[1][0]):
        assert float(layer.weight.std()) == pytest.approx(0.02, rel=0.2)
    assert not G.encoder.log_sigma.weight.any()
    default = Generator(ModelConfig(**small))
    assert {m.negative_slope for m in default.modules() if isinstance(m, nn.LeakyReLU)} == {0.2}
    norms = [m for m in default.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.eps == 1e-5 and m.momentum == 0.1 and bool((m.weight != 1).all()) for m in norms)
    assert float(default.encoder.mu.weight.std()) == pytest.approx(0.02, rel=0.2)
