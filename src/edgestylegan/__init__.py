"""EdgeStyleGAN: a reproducible MobileStyleGAN compression study (distill, prune, quantize, evaluate)."""

__version__ = "0.1.0"
