"""Each loss of the paper's equations 1-7 against values worked out by hand (with `math`)."""
from __future__ import annotations

import math

import pytest
import torch

from fexgan.nets.losses import (
    adversarial_terms,
    discriminator_loss,
    generator_loss,
    kl_loss,
    reconstruction_loss,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def log_softmax(logits: list[float], k: int) -> float:
    return logits[k] - math.log(sum(math.exp(v) for v in logits))


LOGITS = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]


def test_binary_cross_entropy_on_raw_logits() -> None:
    x = torch.tensor([0.0, 2.0, -1.0])
    cls = torch.zeros(3, 2)
    labels = torch.zeros(3, dtype=torch.long)
    real, _ = adversarial_terms(x, cls, True, labels)
    fake, _ = adversarial_terms(x, cls, False, labels)
    # -log sigmoid(x) = softplus(-x);  -log(1 - sigmoid(x)) = softplus(x)
    assert real.item() == pytest.approx((math.log(2) + softplus(-2.0) + softplus(1.0)) / 3, rel=1e-6)
    assert fake.item() == pytest.approx((math.log(2) + softplus(2.0) + softplus(-1.0)) / 3, rel=1e-6)


def test_binary_cross_entropy_is_stable_for_large_logits() -> None:
    real, _ = adversarial_terms(torch.tensor([-200.0]), torch.zeros(1, 2), True, torch.tensor([0]))
    assert real.item() == pytest.approx(200.0, rel=1e-6)


def test_cross_entropy_with_class_indices() -> None:
    _, multi = adversarial_terms(torch.zeros(2), torch.tensor(LOGITS), True, torch.tensor([2, 0]))
    expected = -(log_softmax(LOGITS[0], 2) + log_softmax(LOGITS[1], 0)) / 2
    assert multi.item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_with_soft_targets() -> None:
    """Mixed or jittered affects are probability vectors: -sum_k p_k log q_k, mean over the batch."""
    soft = torch.tensor([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]])
    _, multi = adversarial_terms(torch.zeros(2), torch.tensor(LOGITS), True, soft)
    expected = -(0.5 * log_softmax(LOGITS[0], 0) + 0.5 * log_softmax(LOGITS[0], 2)
                 + 0.2 * log_softmax(LOGITS[1], 0) + 0.3 * log_softmax(LOGITS[1], 1)
                 + 0.5 * log_softmax(LOGITS[1], 2)) / 2
    assert multi.item() == pytest.approx(expected, rel=1e-6)
    # a one-hot probability vector is the same as its class index
    _, hard = adversarial_terms(torch.zeros(2), torch.tensor(LOGITS), True, torch.tensor([[0.0, 0, 1], [1.0, 0, 0]]))
    _, index = adversarial_terms(torch.zeros(2), torch.tensor(LOGITS), True, torch.tensor([2, 0]))
    assert hard.item() == pytest.approx(index.item(), rel=1e-6)


def test_a_weight_leaves_images_out_of_the_adversarial_terms() -> None:
    """A fine-tune's new images (weight 0) do not count; the others' means are as without them."""
    x, logits = torch.tensor([0.0, 2.0]), torch.tensor(LOGITS)
    binary, multi = adversarial_terms(x, logits, True, torch.tensor([2, 0]), weight=torch.tensor([0.0, 1.0]))
    assert binary.item() == pytest.approx(softplus(-2.0), rel=1e-6)
    assert multi.item() == pytest.approx(-log_softmax(LOGITS[1], 0), rel=1e-6)
    logit, cls, labels = torch.tensor([5.0, -1.0]), torch.tensor(LOGITS), torch.tensor([1, 0])
    weighted = discriminator_loss(logit, cls, labels, -logit, cls, labels, weight=torch.tensor([0.0, 1.0]))
    alone = discriminator_loss(logit[1:], cls[1:], labels[1:], -logit[1:], cls[1:], labels[1:])
    assert all(weighted[k].item() == pytest.approx(alone[k].item(), rel=1e-6) for k in alone)


def test_kl_with_log_sigma() -> None:
    """KL(N(mu, sigma^2) || N(0, 1)) = (sigma^2 + mu^2 - 1 - 2 log sigma) / 2 per dimension, summed
    over the latent dimensions and averaged over the batch."""
    mu = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    sigma = torch.tensor([[1.0, 2.0], [0.5, 1.0]])
    per_dim = [(s * s + m * m - 1 - 2 * math.log(s)) / 2
               for m, s in zip(mu.flatten().tolist(), sigma.flatten().tolist())]
    assert per_dim[0] == 0.5 and per_dim[3] == 2.0  # the hand values: (1+1-1-0)/2, (1+4-1-0)/2
    assert kl_loss(mu, sigma.log()).item() == pytest.approx(sum(per_dim) / 2, rel=1e-6)
    assert kl_loss(torch.zeros(3, 5), torch.zeros(3, 5)).item() == 0.0  # the prior itself


def test_l1_reconstruction() -> None:
    generated = torch.tensor([[0.0, 0.5], [-1.0, 1.0]])
    target = torch.tensor([[1.0, 0.5], [0.0, -1.0]])
    assert reconstruction_loss(generated, target).item() == pytest.approx((1 + 0 + 1 + 2) / 4)


def test_generator_total_uses_every_weight() -> None:
    fake_logit = torch.tensor([0.0, 2.0])
    cls = torch.tensor(LOGITS)
    target = torch.tensor([2, 0])
    mu, log_sigma = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    generated, target_image = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.25)
    alpha, alpha_binary, beta, gamma = 0.7, 0.3, 0.01, 10.0

    out = generator_loss(fake_logit, cls, target, mu, log_sigma, generated, target_image,
                         alpha, alpha_binary, beta, gamma)
    g_adv = (math.log(2) + softplus(-2.0)) / 2                          # phi_b(1, y) on fakes
    g_cls = -(log_softmax(LOGITS[0], 2) + log_softmax(LOGITS[1], 0)) / 2  # phi_m(A_t, y_m)
    kl = 0.5 + (4 - 1 - 2 * math.log(2)) / 2  # one image, two latent dimensions summed
    rec = 0.25
    assert out["g_adv"].item() == pytest.approx(g_adv, rel=1e-6)
    assert out["g_cls"].item() == pytest.approx(g_cls, rel=1e-6)
    assert out["kl"].item() == pytest.approx(kl, rel=1e-6)
    assert out["rec"].item() == pytest.approx(rec, rel=1e-6)
    assert out["g_total"].item() == pytest.approx(alpha_binary * g_adv + alpha * g_cls + beta * kl + gamma * rec,
                                                  rel=1e-6)


def test_discriminator_total() -> None:
    real_logit, fake_logit = torch.tensor([1.0, -0.5]), torch.tensor([0.0, 3.0])
    real_cls, fake_cls = torch.tensor(LOGITS), torch.tensor(LOGITS).flip(1)
    source, target = torch.tensor([0, 1]), torch.tensor([2, 2])
    out = discriminator_loss(real_logit, real_cls, source, fake_logit, fake_cls, target)
    rb = (softplus(-1.0) + softplus(0.5)) / 2
    rm = -(log_softmax(LOGITS[0], 0) + log_softmax(LOGITS[1], 1)) / 2
    fb = (math.log(2) + softplus(3.0)) / 2
    flipped = [row[::-1] for row in LOGITS]
    fm = -(log_softmax(flipped[0], 2) + log_softmax(flipped[1], 2)) / 2
    assert out["d_cls_real"].item() == pytest.approx(rm, rel=1e-6)
    assert out["d_real"].item() == pytest.approx(rb + rm, rel=1e-6)
    assert out["d_fake"].item() == pytest.approx(fb + fm, rel=1e-6)
    assert out["d_total"].item() == pytest.approx(rb + rm + fb + fm, rel=1e-6)
    reals_only = discriminator_loss(real_logit, real_cls, source, fake_logit, fake_cls, target, classify_fakes=False)
    assert reals_only["d_fake"].item() == pytest.approx(fb, rel=1e-6)  # StarGAN's: no class term on fakes
    assert reals_only["d_total"].item() == pytest.approx(rb + rm + fb, rel=1e-6)
