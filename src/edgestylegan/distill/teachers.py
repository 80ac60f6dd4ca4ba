"""Distillation teachers: the pretrained MobileStyleGAN checkpoint, or a StyleGAN2 config-f (rosinality) file/URL.

Both expose `style(z, truncation)`, `synthesis(w, noise_mode)`, `w_avg`, `resolution`, `style_dim`, and are frozen.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from ..errors import UserError
from ..io.checkpoint import checkpoint_info, load_generator
from ..io.download import fetch, sha256_of
from ..io.stylegan2_checkpoint import load_rosinality
from ..models.mobilestylegan import Generator
from ..models.stylegan2 import StyleGAN2Generator


@dataclasses.dataclass
class Teacher:
    kind: str                       # mobilestylegan | stylegan2
    model: nn.Module                # Generator or StyleGAN2Generator, eval, requires_grad False
    sha256: str                     # of the file it came from
    source: str                     # human-readable provenance
    info: dict                      # checkpoint metadata (mobilestylegan) or {}


def _freeze(model: nn.Module) -> nn.Module:
    return model.eval().requires_grad_(False)


def load_teacher(kind: str, mobilestylegan_path: str | Path, download_dir: str | Path, stylegan2_file: str = "",
                 stylegan2_url: str = "", stylegan2_sha256: str = "") -> Teacher:
    """kind mobilestylegan: the file at mobilestylegan_path (stage fetch_teacher's). kind stylegan2: stylegan2_file,
    or stylegan2_url fetched into download_dir and checked against stylegan2_sha256."""
    if kind == "mobilestylegan":
        path = Path(mobilestylegan_path)
        if not path.is_file():
            raise UserError(f"teacher checkpoint {path} does not exist; run `dvc repro fetch_teacher` first")
        return Teacher(kind, _freeze(load_generator(path)), sha256_of(path), f"file {path}", checkpoint_info(path))
    if kind == "stylegan2":
        if stylegan2_file:
            path = Path(stylegan2_file)
            if not path.is_file():
                raise UserError(f"distill.stylegan2_file = {path} does not exist (a rosinality stylegan2-pytorch .pt "
                                "with a `g_ema` entry)")
            digest = sha256_of(path)
            if stylegan2_sha256 and digest != stylegan2_sha256.lower():
                raise UserError(f"{path}: sha256 {digest} does not match distill.stylegan2_sha256 {stylegan2_sha256}")
            source = f"file {path}"
        elif stylegan2_url:
            name = Path(stylegan2_url.split("?")[0]).name or "stylegan2.pt"
            path = fetch(stylegan2_url, stylegan2_sha256, Path(download_dir) / name)
            digest, source = stylegan2_sha256.lower(), f"url {stylegan2_url}"
        else:
            raise UserError("distill.teacher = stylegan2 needs distill.stylegan2_file or distill.stylegan2_url "
                            "(+ distill.stylegan2_sha256)")
        return Teacher(kind, _freeze(load_rosinality(path)), digest, source, {})
    raise ValueError(f"unknown teacher kind {kind!r}")


def teacher_noise_by_layer(teacher: nn.Module) -> dict[str, object]:
    """The teacher's fixed unit noise maps, keyed by the student's NoiseInjection path they feed.

    MobileStyleGAN: same module names (`synthesis.conv1`, `synthesis.blocks.i.conv{1,2}`), plus their strengths.
    StyleGAN2: noise_0 -> conv1; noise_{2i+1}, noise_{2i+2} -> block i conv1, conv2 (same spatial sizes; the upstream
    NoiseManager's rule). The strengths differ in meaning there, so only the maps are shared.
    """
    maps = {}
    if isinstance(teacher, Generator):
        for name, module in teacher.synthesis.named_modules():
            if hasattr(module, "noise_map"):
                maps[f"synthesis.{name}"] = (module.noise_map, module.noise_strength)
    elif isinstance(teacher, StyleGAN2Generator):
        noise = teacher.synthesis.noise_maps()
        maps["synthesis.conv1.noise"] = (noise[0], None)
        for i in range(teacher.config.num_blocks):
            maps[f"synthesis.blocks.{i}.conv1.noise"] = (noise[2 * i + 1], None)
            maps[f"synthesis.blocks.{i}.conv2.noise"] = (noise[2 * i + 2], None)
    else:
        raise TypeError(f"unsupported teacher {type(teacher).__name__}")
    return maps
