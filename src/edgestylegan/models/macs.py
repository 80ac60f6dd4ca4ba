"""Analytic compute of a MobileStyleGAN configuration, and upstream's full parameter set (all training heads).

One MAC = one multiply-accumulate of a weight with an activation inside a convolution or a linear layer, per
generated image (batch 1), at the model's output resolution: conv MACs = C_out * C_in/groups * k_h * k_w * H_out
* W_out; linear MACs = in * out. Dense kernels: a pruned (zero) weight still costs its MAC. Elementwise work
(style multiplies, noise, bias, leaky ReLU, the Haar IDWT) is not a MAC and is counted separately as ops.
"""
from __future__ import annotations

import torch
from torch import nn

from .mobilestylegan import Generator, GeneratorConfig, IDWTUpsample, ModulatedConv2d, ModulatedDWConv2d, NoiseInjection


def analytic_macs(config: GeneratorConfig) -> dict:
    """Per-layer MACs and elementwise ops for one image, from shapes only (the model is built on the meta device).

    Returns {"layers": {name: macs}, "conv": .., "linear": .., "mapping": .., "total": .., "elementwise_ops": ..,
    "flops_2mac_plus_elementwise": ..}.
    """
    with torch.device("meta"):
        gen = Generator(config)
    layers, elementwise = {}, [0]
    hooks = []

    def conv_hook(name):
        def hook(module, args, out):
            k = module.kernel_size[0] * module.kernel_size[1]
            layers[name] = out.numel() // out.shape[0] * (module.in_channels // module.groups) * k
            elementwise[0] += out.numel() // out.shape[0] if module.bias is not None else 0   # bias add
        return hook

    def linear_hook(name):
        def hook(module, args, out):
            layers[name] = module.in_features * module.out_features
        return hook

    def input_numel_hook(factor):
        def hook(module, args):
            elementwise[0] += factor * (args[0].numel() // args[0].shape[0])
        return hook

    for name, module in gen.named_modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook(name)))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook(name)))
        elif isinstance(module, (ModulatedConv2d, ModulatedDWConv2d, IDWTUpsample)):
            hooks.append(module.register_forward_pre_hook(input_numel_hook(1)))          # style multiply
        elif isinstance(module, NoiseInjection):
            hooks.append(module.register_forward_pre_hook(input_numel_hook(2)))          # noise add + leaky ReLU
    for name, module in gen.named_modules():      # Haar IDWT: 3 adds/muls per output value (wavelets.idwt_haar)
        if type(module).__name__ == "HaarIDWT":
            hooks.append(module.register_forward_hook(
                lambda m, a, out: elementwise.__setitem__(0, elementwise[0] + 3 * (out.numel() // out.shape[0]))))
    with torch.no_grad():
        gen(torch.zeros(1, config.style_dim, device="meta"))
    for h in hooks:
        h.remove()
    conv = sum(v for k, v in layers.items() if k.startswith("synthesis.") and ".modulation" not in k)
    linear = sum(v for k, v in layers.items() if ".modulation" in k)
    mapping = sum(v for k, v in layers.items() if k.startswith("mapping."))
    total = conv + linear + mapping
    return {"layers": layers, "conv": conv, "modulation_linear": linear, "mapping": mapping, "total": total,
            "elementwise_ops": elementwise[0], "flops_2mac_plus_elementwise": 2 * total + elementwise[0]}


def upstream_parameter_set(gen: Generator, seed: int = 0) -> Generator:
    """A copy of `gen` with every intermediate frequency head, i.e. upstream MobileStyleGAN's parameter set.

    The exported IR (our teacher) dropped `to_img1` and `blocks.0..5.to_img`; they are initialised as a fresh
    model would be (seeded). With the teacher config this has exactly upstream's 8,852,079 synthesis parameters.
    """
    import dataclasses as dc

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        full = Generator(dc.replace(gen.config, all_heads=True))
    missing, unexpected = full.load_state_dict(gen.state_dict(), strict=False)
    if unexpected or any(".to_img" not in k for k in missing):
        raise ValueError(f"cannot extend to all heads: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return full.eval()
