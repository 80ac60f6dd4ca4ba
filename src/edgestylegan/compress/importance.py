"""How much each output channel of a targeted layer matters to the image: the weights of the OBS mask choice.

SparseGPT's saliency w^2 / [H^-1]_jj^2 is a layer's own output error, every output row counted alike. Here the rows
of one layer matter very differently to the image: a modulation row scales one input channel of a depthwise conv, and
those channels' activations differ by more than 10x. With g the gradient of the image with respect to a layer's
output, the image error of a small weight change is, to second order, sum over rows r of E[g_r^2] (dw_r H dw_r^T)
when the output gradients and the layer's inputs are taken as independent (the diagonal of the Kronecker-factored
Fisher, as in K-FAC). So the mask is chosen by the saliency times E[g_r^2]; the closed-form re-fit of each row's
surviving weights does not depend on it.

E[g_r^2] is estimated without forming the Jacobian (Hutchinson): for v ~ N(0, I) over the image at `resolution` px,
the gradient of <v, image> has E_v[(J^T v)_r^2] = ||J_r||^2. One v per calibration latent, summed over the layer's
output pixels. No compression library exposes this for arbitrary modules (NNCF and llm-compressor weigh rows
uniformly), so it is written here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..models.mobilestylegan import Generator


def output_importance(gen: Generator, owners: dict[str, nn.Module], styles: torch.Tensor, resolution: int,
                      seed: int = 0, batch_size: int = 2, progress: bool = True) -> dict[str, torch.Tensor]:
    """{weight name: [rows] mean over `styles` of the squared image gradient at each output channel of the layer
    `owners[name]` of `gen`}, the image area-downsampled to `resolution` px."""
    if resolution > gen.resolution or gen.resolution % resolution:
        raise ValueError(f"importance resolution {resolution} must divide the model's {gen.resolution}")
    outputs: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_module, _args, out):
            out.retain_grad()
            outputs[name] = out
        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in owners.items()]
    totals = {name: torch.zeros(module.weight.shape[0], dtype=torch.float64) for name, module in owners.items()}
    probe = torch.Generator().manual_seed(seed)
    requires_grad = {n: p.requires_grad for n, p in gen.named_parameters()}
    gen.requires_grad_(False)
    try:
        for batch in tqdm(styles.split(batch_size), desc="importance", unit="batch", disable=not progress):
            with torch.enable_grad():
                image = gen.synthesis(batch.detach().requires_grad_(True))
                image = F.interpolate(image, size=resolution, mode="area") if resolution < gen.resolution else image
                (image * torch.randn(image.shape, generator=probe)).sum().backward()
            for name, out in outputs.items():
                reduce = (0,) if out.dim() == 2 else (0, 2, 3)
                totals[name] += out.grad.to(torch.float64).square().sum(dim=reduce)
            outputs.clear()
    finally:
        for handle in handles:
            handle.remove()
        for n, p in gen.named_parameters():
            p.requires_grad_(requires_grad[n])
    return {name: (total / len(styles)).to(torch.float32) for name, total in totals.items()}
