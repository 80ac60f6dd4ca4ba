"""Reading and writing rosinality `stylegan2-pytorch` checkpoints for `models.stylegan2.StyleGAN2Generator`.

The files are torch pickles, read with `weights_only=True` (no code runs). A generator state dict maps name to name
onto the synthesis modules; the raw equalized-lr mapping tensors `style.k.*` become `MappingNetwork`'s effective
weights (W_eff = W_raw * lr_mlp / sqrt(style_dim), b_eff = b_raw * lr_mlp). Every key must be used and every shape
match, or `StyleGAN2FormatError` names the file and the offending tensors.
"""
from __future__ import annotations

import argparse
import math
import pickle
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..models.stylegan2 import StyleGAN2Config, StyleGAN2Generator, kernel_2d


class StyleGAN2FormatError(CheckpointError):
    """A StyleGAN2 file that is missing, unreadable or not in rosinality's generator format."""


_IGNORED_BUFFERS = re.compile(r"^(convs\.\d+\.conv\.blur\.kernel|to_rgbs\.\d+\.upsample\.kernel)$")


def _read_torch_file(path: Path) -> dict:
    # weights_only: never execute pickled code. rosinality training checkpoints also hold an argparse.Namespace.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
        raise StyleGAN2FormatError(f"{path}: cannot read as a (weights-only) torch checkpoint: {e}") from e


def infer_config(state: dict[str, torch.Tensor], lr_mlp: float = 0.01) -> StyleGAN2Config:
    """Architecture from the tensor shapes of a rosinality generator state dict."""
    try:
        style_dim = state["style.1.weight"].shape[0]
        mapping_layers = len([k for k in state if re.fullmatch(r"style\.\d+\.weight", k)])
        num_blocks = len([k for k in state if re.fullmatch(r"to_rgbs\.\d+\.bias", k)])
        channels = [state["input.input"].shape[1]]
        channels += [state[f"convs.{2 * i}.conv.weight"].shape[1] for i in range(num_blocks)]
    except KeyError as e:
        raise StyleGAN2FormatError(f"not a rosinality StyleGAN2 generator state dict: key {e} is missing") from e
    return StyleGAN2Config(style_dim=style_dim, mapping_layers=mapping_layers, resolution=2 ** (num_blocks + 2),
                           channels=tuple(channels), lr_mlp=lr_mlp)


def generator_from_rosinality(state: dict[str, torch.Tensor], latent_avg: torch.Tensor | None = None,
                              lr_mlp: float = 0.01, source: str = "state dict") -> StyleGAN2Generator:
    """Build a generator from a rosinality `g_ema` state dict; every key must be used and every shape match."""
    config = infer_config(state, lr_mlp)
    gen = StyleGAN2Generator(config)
    target = gen.synthesis.state_dict()
    synthesis_state, mapping_state = {}, {}
    scale = lr_mlp / math.sqrt(config.style_dim)
    unexpected = []
    for key, value in state.items():
        m = re.fullmatch(r"style\.(\d+)\.(weight|bias)", key)
        if m:
            index = int(m.group(1)) - 1  # style.0 is PixelNorm.
            if not 0 <= index < config.mapping_layers:
                unexpected.append(key)
                continue
            mapping_state[f"layers.{index}.{m.group(2)}"] = value * (scale if m.group(2) == "weight" else lr_mlp)
        elif _IGNORED_BUFFERS.match(key):
            if value.shape != (4, 4) or not torch.allclose(value.float(), kernel_2d() * 4, atol=1e-6):
                raise StyleGAN2FormatError(f"{source}: {key} is not the [1, 3, 3, 1] blur kernel this loader "
                                           "implements")
        elif key in target:
            synthesis_state[key] = value
        else:
            unexpected.append(key)
    missing = sorted(set(target) - set(synthesis_state))
    missing += sorted(set(gen.mapping.state_dict()) - set(mapping_state))
    if missing or unexpected:
        raise StyleGAN2FormatError(f"{source}: missing tensors {missing[:5]}, unexpected tensors "
                                   f"{sorted(unexpected)[:5]} (expected a rosinality stylegan2-pytorch generator "
                                   "state dict)")
    for sd, module in ((synthesis_state, gen.synthesis), (mapping_state, gen.mapping)):
        expected = module.state_dict()
        for key, value in sd.items():
            if value.shape != expected[key].shape:
                raise StyleGAN2FormatError(f"{source}: {key} has shape {tuple(value.shape)}, the architecture inferred "
                                           f"from the other tensors expects {tuple(expected[key].shape)}")
        module.load_state_dict({k: v.float() for k, v in sd.items()})
    if latent_avg is not None:
        if latent_avg.numel() != config.style_dim:
            raise StyleGAN2FormatError(f"{source}: latent_avg has {latent_avg.numel()} values, expected "
                                       f"{config.style_dim}")
        gen.w_avg.copy_(latent_avg.reshape(-1).float())
    else:
        gen.estimate_w_avg()
    return gen.eval()


def load_rosinality(path: str | Path, key: str = "g_ema", lr_mlp: float = 0.01) -> StyleGAN2Generator:
    """Load `ckpt[key]` (default g_ema) of a rosinality checkpoint (a bare state dict is accepted too).

    w_avg comes from `latent_avg` when the file has it, else it is estimated from 4096 latents (seed 0).
    """
    path = Path(path)
    if not path.is_file():
        raise StyleGAN2FormatError(f"StyleGAN2 checkpoint {path} does not exist")
    ckpt = _read_torch_file(path)
    if not isinstance(ckpt, dict):
        raise StyleGAN2FormatError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    if key in ckpt:
        state = ckpt[key]
    elif "style.1.weight" in ckpt:
        state = ckpt
    else:
        raise StyleGAN2FormatError(f"{path}: no `{key}` entry (keys: {sorted(ckpt)[:8]}); expected rosinality's "
                                   "{'g_ema': state_dict, 'latent_avg': ...} format")
    return generator_from_rosinality(state, ckpt.get("latent_avg"), lr_mlp, source=str(path))


def to_rosinality_state_dict(gen: StyleGAN2Generator) -> dict[str, torch.Tensor]:
    """Inverse of the loader (raw equalized-lr mapping weights, blur kernels included): for round trips and export."""
    config = gen.config
    scale = config.lr_mlp / math.sqrt(config.style_dim)
    state = {k: v.detach().clone() for k, v in gen.synthesis.state_dict().items()}
    for i in range(config.mapping_layers):
        state[f"style.{i + 1}.weight"] = gen.mapping.layers[i].weight.detach() / scale
        state[f"style.{i + 1}.bias"] = gen.mapping.layers[i].bias.detach() / config.lr_mlp
    for i in range(config.num_blocks):
        state[f"convs.{2 * i}.conv.blur.kernel"] = kernel_2d() * 4
        state[f"to_rgbs.{i}.upsample.kernel"] = kernel_2d() * 4
    return state
