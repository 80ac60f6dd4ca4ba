"""Cross-layer equalization of a MobileStyleGAN's style -> depthwise -> pointwise chains, before int8 quantization.

Every `ModulatedDWConv2d` computes pointwise(depthwise(x * s)) with s = scale * (A w + a), one style per input
channel, and int8 quantizes two activations per chain with one range per tensor: the depthwise input x * s and the
depthwise output. Channels with small ranges get few int8 steps. Two rescalings leave the float function unchanged
(Nagel et al. 2019, "Data-free quantization through weight equalization and bias correction"; the depthwise conv is
per channel, has no bias, and nothing nonlinear sits between the three):

1. style -> depthwise: style row c (A_c, a_c) divided by t_c and depthwise kernel c multiplied by t_c. With t_c the
   channel's share of the depthwise input's range, every input channel spans the same range; the depthwise output
   is unchanged, and so are the depthwise weights' int8 steps (one scale per channel).
2. depthwise -> pointwise: depthwise kernel c divided by r_c and pointwise input column c multiplied by r_c, with
   r_c = range(out_c)^alpha / range(W[:, c])^(1 - alpha) (SmoothQuant's balance, Xiao et al. 2023): alpha moves
   the range spread between the pointwise input activation (one int8 range) and the pointwise weight columns (one
   int8 scale per output row).

The ranges are per-channel absolute maxima, averaged over calibration images, of the float model itself.

Why written here: NNCF's SmoothQuant balances activations against the weights of the same layer, and its channel
alignment handles conv -> add -> conv; neither reaches a style MatMul through the Multiply into a depthwise conv, and
the style MatMuls stay float (quantize.float_ops)."""
from __future__ import annotations

import copy

import torch

from ..models.mobilestylegan import Generator, ModulatedDWConv2d

_EPS = 1e-12


@torch.no_grad()
def _channel_ranges(gen: Generator, z: torch.Tensor, truncation: float,
                    batch_size: int) -> dict[ModulatedDWConv2d, tuple]:
    """Per ModulatedDWConv2d: (mean over images of each channel's max |depthwise input|, same of its output)."""
    sums: dict = {}
    hooks = []
    for module in gen.synthesis.modules():
        if isinstance(module, ModulatedDWConv2d):
            def record(conv, inputs, output, owner=module):
                stats = [t.abs().amax(dim=(2, 3)).sum(0) for t in (inputs[0], output)]
                prev = sums.get(owner)
                sums[owner] = stats if prev is None else [p + s for p, s in zip(prev, stats)]
            hooks.append(module.depthwise.register_forward_hook(record))
    try:
        for start in range(0, len(z), batch_size):
            gen(z[start:start + batch_size], truncation=truncation)
    finally:
        for h in hooks:
            h.remove()
    return {m: tuple(s / len(z) for s in stats) for m, stats in sums.items()}


@torch.no_grad()
def equalize_generator(gen: Generator, z: torch.Tensor, alpha: float, truncation: float = 1.0,
                       batch_size: int = 4) -> Generator:
    """A copy of `gen` with every style -> depthwise -> pointwise chain equalized (module docstring) on the ranges
    the calibration latents `z` produce at `truncation`; alpha in [0, 1] balances depthwise -> pointwise. The copy
    computes the same images as `gen` to float round-off."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = copy.deepcopy(gen).eval()
    ranges = _channel_ranges(out, z, truncation, batch_size)
    for module, (in_range, out_range) in ranges.items():
        active = in_range > _EPS
        t = torch.ones_like(in_range)
        if active.any():
            t[active] = in_range[active] / in_range[active].mean()
        module.modulation.weight.div_(t[:, None])
        module.modulation.bias.div_(t)
        module.depthwise.weight.mul_(t[:, None, None, None])

        r = _balance_factors(out_range, module.pointwise.weight, alpha)
        module.depthwise.weight.div_(r[:, None, None, None])
        module.pointwise.weight.mul_(r[None, :, None, None])
    return out


def _balance_factors(act_range: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """r_c = act_range_c^alpha / max|weight[:, c]|^(1 - alpha), normalised to mean 1. A channel that no weight reads
    (a pruned-away column) keeps the function whatever its scale: it gets the balanced channels' mean range."""
    column = weight.abs().amax(dim=(0, 2, 3))
    active = act_range > _EPS
    usable = active & (column > _EPS)
    r = torch.ones_like(act_range)
    if usable.any():
        r[usable] = act_range[usable] ** alpha / column[usable] ** (1 - alpha)
        r[usable] /= r[usable].mean()
        idle = active & ~usable
        r[idle] = act_range[idle] / (act_range[usable] / r[usable]).mean()
    return r
