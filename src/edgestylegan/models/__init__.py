"""Model definitions: MobileStyleGAN (one family for loading, pruning, quantization, distillation), StyleGAN2, the
discriminator, Haar wavelets, EfficientNet-Lite0, analytic MACs."""
