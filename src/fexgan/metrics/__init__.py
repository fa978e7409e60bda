"""Metrics of a trained FExGAN, a module per concern (as StyleGAN2-ADA's metrics package):

- judge:       an independent expression + identity classifier trained on real images only
- accuracy:    the paper's Table 1 (the discriminator on real and generated images)
- realism:     FID and diversity in the judge's feature space
- groundtruth: L1 / PSNR / SSIM against the toon renderer's true target
- generated:   batched transfers and random samples from the networks
- sliders:     intensities, 50/50 mixes and morphs from neutral faces (against the truth on toon faces)
- evaluate:    all of it for a run or model file (`fexgan.metrics.evaluate.evaluate`), written by report
"""
