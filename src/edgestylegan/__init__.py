"""EdgeStyleGAN: a reproducible MobileStyleGAN compression study (distill, prune, quantize, evaluate)."""
