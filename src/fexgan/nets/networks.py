"""FExGAN networks: Encoder, Decoder, Generator (both joined) and the auxiliary-classifier
Discriminator, following the reference implementation layer by layer
(../shared/paper/reference-architecture.md) and scaled by `ModelConfig`.

At 128 px the encoder has 7 stride-2 blocks (128 -> 1 px); in general log2(size) blocks, and the
decoder mirrors it. Every network returns raw logits / pre-activation values where a loss follows.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fexgan.config import ModelConfig


def _ch(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


def encoder_channels(cfg: ModelConfig) -> list[int]:
    """128, 256, then 512s, ending in 128 at 1 x 1 (the reference layout at width 1)."""
    n = int(math.log2(cfg.image_size))
    return [_ch(c, cfg.width) for c in [128, 256] + [512] * (n - 3) + [128]]


def decoder_channels(cfg: ModelConfig) -> list[int]:
    """512s, then 256 and 128, from 2 px up to half the image size."""
    n = int(math.log2(cfg.image_size))
    return [_ch(c, cfg.width) for c in [512] * (n - 3) + [256, 128]]


def _kernel_init(weight: torch.Tensor, scheme: str) -> None:
    """`ModelConfig`'s kernel initialisers: "normal" N(0, 0.02) (DCGAN), "glorot_uniform" (Keras' default;
    PyTorch's fans of a transposed convolution's (in, out, k, k) kernel swap Keras', and their sum is the same)."""
    if scheme == "glorot_uniform":
        nn.init.xavier_uniform_(weight)
    else:
        nn.init.normal_(weight, 0.0, 0.02)


def init_weights(module: nn.Module, cfg: ModelConfig | None = None) -> None:
    """Convolutions and transposed convolutions by `cfg.conv_init` / `cfg.deconv_init`, dense layers N(0, 0.02),
    biases zero, batch-norm scales by `cfg.norm_init`; without `cfg` (and by default) all as DCGAN: N(0, 0.02),
    scales N(1, 0.02). The dense layers the reference leaves at Keras' default follow `keras_default_dense`."""
    conv, deconv, norm = (cfg.conv_init, cfg.deconv_init, cfg.norm_init) if cfg is not None else ("normal",) * 3
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            _kernel_init(m.weight, conv if isinstance(m, nn.Conv2d) else deconv if isinstance(m, nn.ConvTranspose2d)
                         else "normal")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            if norm == "ones":
                nn.init.ones_(m.weight)
            else:
                nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def keras_default_dense(layer: nn.Linear, cfg: ModelConfig) -> None:
    """A dense layer the reference builds without an initialiser: `cfg.dense_init` (Keras: Glorot-uniform);
    left as `init_weights` made it under the default, so a default model draws the same numbers as before."""
    if cfg.dense_init != "normal":
        _kernel_init(layer.weight, cfg.dense_init)
        nn.init.zeros_(layer.bias)


def batch_norm(channels: int, cfg: ModelConfig) -> nn.BatchNorm2d:
    """Batch norm with the configuration's momentum (PyTorch's sense: Keras' 0.99 is 0.01) and epsilon."""
    return nn.BatchNorm2d(channels, eps=cfg.norm_eps, momentum=cfg.norm_momentum)


class Dropout(nn.Module):
    """Inverted dropout (zero with probability p, scale the rest by 1 / (1 - p)), as `nn.Dropout`, with
    its mask drawn by `torch.rand`: on the CPU `nn.Dropout`'s `bernoulli_` is 5x slower (2.4 ms for
    the 8 px block's 32 x 128 x 8 x 8 at the `cpu` preset, 4 % of a step)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _down(cin: int, cout: int, norm: bool, act: bool, cfg: ModelConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
    if norm:
        layers.append(batch_norm(cout, cfg))
    if act:
        layers.append(nn.LeakyReLU(cfg.leaky_slope, inplace=True))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """(image, source affect) -> (mu, log_sigma) of the latent normal distribution."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.size = cfg.image_size
        # The affect becomes a fourth input channel: dense (classes -> size*size), ReLU.
        self.affect_plane = nn.Sequential(nn.Linear(cfg.num_classes, self.size * self.size), nn.ReLU(inplace=True))
        chs = encoder_channels(cfg)
        blocks, cin = [], 4
        for i, cout in enumerate(chs):
            blocks.append(_down(cin, cout, norm=i > 0, act=i < len(chs) - 1, cfg=cfg))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.mu = nn.Linear(cin, cfg.latent_dim)
        self.log_sigma = nn.Linear(cin, cfg.latent_dim)
        init_weights(self, cfg)
        keras_default_dense(self.mu, cfg)
        nn.init.zeros_(self.log_sigma.weight)  # start at sigma = 1, as the reference

    def forward(self, image: torch.Tensor, affect: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        plane = self.affect_plane(affect).view(-1, 1, self.size, self.size).to(image.dtype)
        h = self.blocks(torch.cat([image, plane], dim=1)).flatten(1)
        return self.mu(h), self.log_sigma(h)


class Decoder(nn.Module):
    """(latent z, target affect) -> image in [-1, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = _ch(256, cfg.width)
        self.affect_in = nn.Sequential(nn.Linear(cfg.num_classes, _ch(64, cfg.width)),
                                       nn.Linear(_ch(64, cfg.width), hidden), nn.ReLU(inplace=True))
        self.z_in = nn.Sequential(nn.Linear(cfg.latent_dim, hidden), nn.ReLU(inplace=True))
        blocks, cin, size = [], 2 * hidden, 1
        for cout in decoder_channels(cfg):
            size *= 2
            layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), batch_norm(cout, cfg)]
            if size <= 8 and cfg.dropout > 0:  # the reference drops out in the 2, 4 and 8 px blocks
                layers.append(Dropout(cfg.dropout))
            layers.append(nn.ReLU(inplace=True))
            blocks.append(nn.Sequential(*layers))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Sequential(nn.ConvTranspose2d(cin, 3, 4, 2, 1), nn.Tanh())
        init_weights(self, cfg)
        keras_default_dense(self.affect_in[0], cfg)

    def features(self, z: torch.Tensor, affect: torch.Tensor, skips: dict[int, torch.Tensor] | None = None
                 ) -> torch.Tensor:
        """The last hidden layer (B, channels, S/2, S/2), before the output layer; `skips` (side ->
        features) are added to the output of the block of that side (the edit design's skips)."""
        h = torch.cat([self.z_in(z), self.affect_in(affect.to(z.dtype))], dim=1)[:, :, None, None]
        if not skips:
            return self.blocks(h)
        for block in self.blocks:
            h = block(h)
            if h.shape[-1] in skips:
                h = h + skips[h.shape[-1]]
        return h

    def forward(self, z: torch.Tensor, affect: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(z, affect))


class Generator(nn.Module):
    """The paper's generator: encoder and decoder joined. Every caller goes through `encode`, `decode`
    and `transfer`, so a design whose decoder also looks at the source image fits behind them."""

    redraws = True  # every face is drawn anew from its latent: one unlike the training characters comes back as one of them

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, image: torch.Tensor, source_affect: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_sigma) of the latent normal distribution of `image` showing `source_affect`."""
        return self.encoder(image, source_affect)

    def draw(self, z: torch.Tensor, affect: torch.Tensor, source: torch.Tensor | None, parts: bool = False
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(image, with `parts` what the design's own loss terms need drawn besides the image: see
        `fexgan.nets.designs`); the paper's design has no parts."""
        return self.decoder(z, affect), {}

    def decode(self, z: torch.Tensor, affect: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """An image in [-1, 1] from latents and affects; `source` is the image being edited (None when
        the decoder draws alone, as in Fig. 4). The paper's decoder does not look at it."""
        return self.draw(z, affect, source)[0]

    def transfer(self, image: torch.Tensor, source_affect: torch.Tensor, target_affect: torch.Tensor) -> torch.Tensor:
        """`image` with `target_affect`, decoded from the latent mean: the deterministic edit."""
        return self.decode(self.encode(image, source_affect)[0], target_affect, image)

    @staticmethod
    def reparameterize(mu: torch.Tensor, log_sigma: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(log_sigma) * eps

    def forward(self, image: torch.Tensor, source: torch.Tensor, target: torch.Tensor, parts: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Training's pass: (generated image from a sampled latent, mu, log_sigma, the design's parts, drawn
        when `parts`)."""
        mu, log_sigma = self.encode(image, source)
        fake, drawn = self.draw(self.reparameterize(mu, log_sigma), target, image, parts)
        return fake, mu, log_sigma, drawn


class SourceSkips(nn.Module):
    """The source image and the target affect (one plane per expression) at the decoder's last `levels`
    sides (S/2, S/4, ...): a small stack of stride-2 convolutions whose outputs are each projected by a
    1 x 1 convolution that starts at zero (so that a new model's decoder starts as the paper's).
    pix2pix's U-Net skips, from the image; the affect planes tell every pixel what to draw (StarGAN)."""

    def __init__(self, cfg: ModelConfig, levels: int = 3):
        super().__init__()
        chs = decoder_channels(cfg)[::-1][:levels]  # the decoder's channels at S/2, S/4, ...
        downs, cin = [], 3 + cfg.num_classes
        for cout in chs:  # 3 x 3 stride-2 convolutions: 9/16 of the cost of the reference's 4 x 4 ones
            downs.append(nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.LeakyReLU(cfg.leaky_slope, inplace=True)))
            cin = cout
        self.downs = nn.ModuleList(downs)
        self.projections = nn.ModuleList(nn.Conv2d(c, c, 1) for c in chs)
        init_weights(self)
        for proj in self.projections:
            nn.init.zeros_(proj.weight)

    def forward(self, source: torch.Tensor, affect: torch.Tensor) -> dict[int, torch.Tensor]:
        """{side: features} for `Decoder.features`."""
        planes = affect.to(source.dtype)[:, :, None, None].expand(-1, -1, *source.shape[-2:])
        out, h = {}, torch.cat([source, planes], dim=1)
        for down, proj in zip(self.downs, self.projections):
            h = down(h)
            out[h.shape[-1]] = proj(h)
        return out


class EditHead(nn.Module):
    """The decoder's last features -> a change to the source image at full size: a transposed
    convolution to the image's side, then a 3 x 3 convolution over those features beside the source's
    own pixels; the change starts at zero (a new model hands back its input)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = decoder_channels(cfg)[-1]
        hidden = max(8, c // 2)
        self.up = nn.Sequential(nn.ConvTranspose2d(c, hidden, 4, 2, 1), nn.ReLU(inplace=True))
        self.change = nn.Conv2d(hidden + 3, 3, 3, 1, 1)
        init_weights(self)
        nn.init.zeros_(self.change.weight)

    def forward(self, features: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        # `change` over [up(features), source] as two convolutions, the same sum: the one over both would
        # also compute the source's input gradient, which nothing needs (benchmarks/RESULTS.md, "Step cost").
        up = self.up(features)
        w, n = self.change.weight, up.shape[1]
        change = (F.conv2d(up, w[:, :n], self.change.bias, padding=1)
                  + F.conv2d(source.to(up.dtype), w[:, n:], padding=1))
        return (source + change.to(source.dtype)).clamp(-1, 1)


class EditGenerator(Generator):
    """The paper's encoder and decoder, with the image being edited fed to the decoder: the source and
    the target affect reach its last three sides through `SourceSkips`, and `EditHead` turns its last
    features into a change of the source (out = source + change): the source's pixels pass through
    wherever the expression does not change them, so a character the model never saw keeps its
    identity. Drawing alone (no source: Fig. 4, `sample`) it is the paper's decoder, which training
    keeps drawing whole faces by its own L1 on a quarter of the batch (`losses.alone_terms`), on every
    `alone_every`-th step (its registration: `fexgan.nets.designs`)."""

    redraws = False

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.skips = SourceSkips(cfg)
        self.head = EditHead(cfg)

    def draw(self, z: torch.Tensor, affect: torch.Tensor, source: torch.Tensor | None, parts: bool = False
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if source is None:
            return self.decoder(z, affect), {}
        edited = self.head(self.decoder.features(z, affect, self.skips(source, affect)), source)
        drawn = {}
        if parts:  # the decoder drawing alone, for a quarter of the batch
            quarter = max(1, len(z) // 4)
            drawn["alone"] = self.decoder(z[:quarter], affect[:quarter])
        return edited, drawn


class Discriminator(nn.Module):
    """image -> (real/fake logit (B,), expression logits (B, classes)): an auxiliary classifier."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c1, c2, c3 = _ch(64, cfg.width), _ch(128, cfg.width), _ch(512, cfg.width)
        self.features = nn.Sequential(_down(3, c1, False, True, cfg), _down(c1, c2, True, True, cfg),
                                      _down(c2, c3, True, True, cfg), nn.Flatten())
        n_feat = c3 * (cfg.image_size // 8) ** 2
        self.real_fake = nn.Linear(n_feat, 1)
        self.classifier = nn.Linear(n_feat, cfg.num_classes)
        init_weights(self, cfg)
        keras_default_dense(self.real_fake, cfg)
        keras_default_dense(self.classifier, cfg)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(image)
        return self.real_fake(h).squeeze(1), self.classifier(h)


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    return Discriminator(cfg)
