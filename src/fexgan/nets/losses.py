"""The paper's losses (equations 1-7). All take raw logits; means over batch (and pixels / latent
dimensions) keep the weights alpha, beta, gamma independent of batch and image size."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def adversarial_terms(real_fake_logit: torch.Tensor, class_logits: torch.Tensor, is_real: bool,
                      affect: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(phi_b, phi_m): binary cross-entropy against `is_real` and cross-entropy against `affect`.

    `affect` is a class-index tensor or a (B, classes) probability vector (mixed / jittered);
    `weight` (B,), when given, says how much each image counts in the means (0: not at all).
    """
    target = torch.full_like(real_fake_logit, 1.0 if is_real else 0.0)
    binary = F.binary_cross_entropy_with_logits(real_fake_logit, target, reduction="none")
    multi = F.cross_entropy(class_logits, affect, reduction="none")
    if weight is None:
        return binary.mean(), multi.mean()
    total = weight.sum().clamp_min(1e-12)
    return (binary * weight).sum() / total, (multi * weight).sum() / total


def kl_loss(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) of eq. 3, with log-variance = 2 log_sigma: summed over the latent
    dimensions as in the paper (a mean would weaken it by the latent size and leave the latents off
    the prior, so that decoding random z gives one face), averaged over the batch."""
    log_var = 2.0 * log_sigma
    return -0.5 * torch.sum(1.0 + log_var - mu.pow(2) - log_var.exp(), dim=1).mean()


def reconstruction_loss(generated: torch.Tensor, target_image: torch.Tensor) -> torch.Tensor:
    """Eq. 2: L1 between G(source, target affect) and a real image of the same character with that affect."""
    return F.l1_loss(generated, target_image)


def alone_terms(alone: torch.Tensor, target_image: torch.Tensor, gamma: float, alone_weight: float
                ) -> dict[str, torch.Tensor]:
    """The edit design's term (`fexgan.nets.networks.EditGenerator`): L1 of the decoder's image drawn alone
    (for the first images of the batch) against their L1 targets, so that the decoder alone still draws
    whole faces (Fig. 4). `design_total` is its weight (`alone_weight` x gamma) times it."""
    alone_rec = F.l1_loss(alone.float(), target_image[:len(alone)])
    return {"design_total": gamma * alone_weight * alone_rec, "alone_rec": alone_rec}


def generator_loss(fake_logit: torch.Tensor, fake_class_logits: torch.Tensor, target_class: torch.Tensor,
                   mu: torch.Tensor, log_sigma: torch.Tensor, generated: torch.Tensor, target_image: torch.Tensor,
                   alpha: float, alpha_binary: float, beta: float, gamma: float) -> dict[str, torch.Tensor]:
    """Eq. 4: alpha * L_GAN^G + beta * L_KL + gamma * L_rec, where L_GAN^G (eq. 1) = phi_b(1, y) + phi_m(A_t, y_m).

    `alpha_binary` weights phi_b separately so the paper's schedule can lower it late in training.
    """
    binary, multi = adversarial_terms(fake_logit, fake_class_logits, True, target_class)
    kl = kl_loss(mu, log_sigma)
    rec = reconstruction_loss(generated, target_image)
    total = alpha_binary * binary + alpha * multi + beta * kl + gamma * rec
    return {"g_total": total, "g_adv": binary, "g_cls": multi, "kl": kl, "rec": rec}


def discriminator_loss(real_logit: torch.Tensor, real_class_logits: torch.Tensor, source_class: torch.Tensor,
                       fake_logit: torch.Tensor, fake_class_logits: torch.Tensor,
                       target_class: torch.Tensor, classify_fakes: bool = True, weight: torch.Tensor | None = None
                       ) -> dict[str, torch.Tensor]:
    """Eqs. 5-7: L_real = phi_b(1, y) + phi_m(A_s, y_m); L_fake = phi_b(0, y^) + phi_m(A_t, y^_m).

    `classify_fakes` False leaves out phi_m(A_t, y^_m) (StarGAN's choice): the classifier learns the
    expressions from real images only, so a half-made edit cannot teach it that it shows the target.
    `weight` (B,), when given, says which sources and their fakes count (a fine-tune leaves out the
    new character's: `fexgan.training.finetune`)."""
    rb, rm = adversarial_terms(real_logit, real_class_logits, True, source_class, weight)
    fb, fm = adversarial_terms(fake_logit, fake_class_logits, False, target_class, weight)
    real, fake = rb + rm, fb + fm if classify_fakes else fb
    return {"d_total": real + fake, "d_real": real, "d_fake": fake, "d_cls_real": rm}
