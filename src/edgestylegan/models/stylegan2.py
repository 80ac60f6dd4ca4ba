"""StyleGAN2 config-f generator (Karras et al. 2020), written to load rosinality's `stylegan2-pytorch` checkpoints.

Used as a distillation teacher (spec section 1.4). The synthesis modules carry rosinality's names and its raw
equalized-lr parametrisation, so a `g_ema` state dict loads name-to-name; the mapping network reuses
`mobilestylegan.MappingNetwork` (effective weights), so the raw `style.k.*` tensors are converted on load:
W_eff = W_raw * lr_mlp / sqrt(style_dim), b_eff = b_raw * lr_mlp. Reading those files and mapping their keys is
`io.stylegan2_checkpoint`'s; this module is only the architecture.

Differences from the reference code that do not change the function:
* Modulation is applied to the activations and demodulation to the output (rosinality modulates the weights and
  runs a grouped conv); both compute conv(x * s, W) * d with d = rsqrt(sum((scale * W * s)^2) + 1e-8).
* upfirdn2d (blur / skip upsampling with the [1, 3, 3, 1] kernel) is plain zero-insertion + pad + depthwise conv.
* Blur/upsample kernels are constants here (non-persistent buffers); the loader checks the stored ones match.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from .mobilestylegan import MappingNetwork, NoiseMode, StyleBasedGenerator

BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)


def config_f_channels(resolution: int, channel_multiplier: int = 2) -> tuple[int, ...]:
    """Feature width at 4, 8, ..., resolution (rosinality's table; config-f is channel_multiplier 2)."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
             256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return tuple(table[2**k] for k in range(2, int(math.log2(resolution)) + 1))


@dataclasses.dataclass(frozen=True)
class StyleGAN2Config:
    style_dim: int = 512                      # Width of z and w.
    mapping_layers: int = 8                   # Linear layers in the mapping network.
    resolution: int = 1024                    # Output image size.
    channels: tuple[int, ...] = config_f_channels(1024)  # Feature width at 4, 8, ..., resolution.
    lr_mlp: float = 0.01                      # Mapping lr multiplier of the source checkpoint (config-f: 0.01).

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if len(self.channels) != self.num_blocks + 1:
            raise ValueError(f"resolution {self.resolution} needs {self.num_blocks + 1} channel entries "
                             f"(4 px .. {self.resolution} px), got {len(self.channels)}")

    @property
    def num_blocks(self) -> int:              # Upsampling blocks: 8 px .. resolution.
        return int(math.log2(self.resolution)) - 2

    @property
    def num_noise(self) -> int:
        return 2 * self.num_blocks + 1


#----------------------------------------------------------------------------
# upfirdn2d with the separable [1, 3, 3, 1] kernel (symmetric, so flipping is a no-op).


def kernel_2d(taps=BLUR_KERNEL) -> torch.Tensor:
    k = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(k, k)
    return k / k.sum()


def filter_2d(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    channels = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = kernel.to(x.dtype)[None, None].expand(channels, 1, -1, -1)
    return F.conv2d(x, weight, groups=channels)


def _zero_insert(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    out = x.new_zeros(b, c, 2 * h, 2 * w)
    out[:, :, ::2, ::2] = x
    return out


#----------------------------------------------------------------------------


class EqualLinear(nn.Module):
    """Style modulation: y = x (W / sqrt(in))^T + b, W ~ N(0, 1), b = 1 (rosinality EqualLinear, lr_mul 1)."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = 1 / math.sqrt(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv with style-dependent demodulation; optional 2x transposed-conv upsampling + blur."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))  # [1OIkk]
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel_size // 2
        if upsample:  # Blur after the stride-2 transposed conv: pad (1, 1), kernel x factor^2.
            self.register_buffer("blur_kernel", kernel_2d() * 4, persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.modulation(w)                                        # [B, I]
        weight = self.weight[0] * self.scale                              # [O, I, k, k]
        x = x * style[:, :, None, None]
        if self.upsample:
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # [B, O, 2H+1, 2W+1]
            x = filter_2d(x, self.blur_kernel, (1, 1))                    # [B, O, 2H, 2W]
        else:
            x = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # d[b, o] = rsqrt(sum_i,k (scale W[o,i,k] s[b,i])^2 + 1e-8)
            energy = torch.einsum("oi,bi->bo", weight.square().sum(dim=(2, 3)), style.square())
            x = x * torch.rsqrt(energy + 1e-8)[:, :, None, None]
        return x


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return x if noise is None else x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """leaky_relu(x + bias, 0.2) * sqrt(2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * math.sqrt(2)


class StyledConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, demodulate=True, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) + bias; adds the 2x-upsampled skip image."""

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:  # upfirdn2d(up=2, pad=(2, 1)) with kernel x factor^2.
            self.register_buffer("upsample_kernel", kernel_2d() * 4, persistent=False)
        else:
            self.upsample_kernel = None

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + filter_2d(_zero_insert(skip), self.upsample_kernel, (2, 1))
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))


class StyleGAN2Synthesis(nn.Module):
    """w [B, style_dim] (one style for every layer) -> image [B, 3, R, R]. Module names follow rosinality."""

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.config = config
        ch, sd = config.channels, config.style_dim
        self.input = ConstantInput(ch[0])
        self.conv1 = StyledConv(ch[0], ch[0], sd)
        self.to_rgb1 = ToRGB(ch[0], sd, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for i in range(config.num_blocks):
            self.convs.append(StyledConv(ch[i], ch[i + 1], sd, upsample=True))
            self.convs.append(StyledConv(ch[i + 1], ch[i + 1], sd))
            self.to_rgbs.append(ToRGB(ch[i + 1], sd))
        self.noises = nn.Module()
        for k in range(config.num_noise):  # noise_0: 4 px; noise_{2i+1}, noise_{2i+2}: block i at 2^(i+3) px.
            size = 2 ** ((k + 5) // 2)
            self.noises.register_buffer(f"noise_{k}", torch.randn(1, 1, size, size))

    def noise_maps(self) -> list[torch.Tensor]:
        return [getattr(self.noises, f"noise_{k}") for k in range(self.config.num_noise)]

    def _noise(self, k: int, like: torch.Tensor, noise_mode: NoiseMode) -> torch.Tensor | None:
        if noise_mode == "none":
            return None
        if noise_mode == "fixed":
            return getattr(self.noises, f"noise_{k}")
        if noise_mode == "random":
            return torch.randn(like.shape[0], 1, like.shape[2], like.shape[3], device=like.device, dtype=like.dtype)
        raise ValueError(f"noise_mode must be fixed|random|none, got {noise_mode!r}")

    def _styled(self, layer: StyledConv, x: torch.Tensor, w: torch.Tensor, k: int, noise_mode: NoiseMode):
        x = layer.conv(x, w)
        return layer.activate(layer.noise(x, self._noise(k, x, noise_mode)))

    def forward(self, w: torch.Tensor, noise_mode: NoiseMode = "fixed") -> torch.Tensor:
        x = self.input.input.expand(w.shape[0], -1, -1, -1)
        x = self._styled(self.conv1, x, w, 0, noise_mode)
        img = self.to_rgb1(x, w)
        for i, to_rgb in enumerate(self.to_rgbs):
            x = self._styled(self.convs[2 * i], x, w, 2 * i + 1, noise_mode)
            x = self._styled(self.convs[2 * i + 1], x, w, 2 * i + 2, noise_mode)
            img = to_rgb(x, w, img)
        return img


class StyleGAN2Generator(StyleBasedGenerator):
    """Mapping + synthesis + truncation centre `w_avg`; same calling convention as mobilestylegan.Generator."""

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config.style_dim, config.mapping_layers)
        self.synthesis = StyleGAN2Synthesis(config)
        self.register_buffer("w_avg", torch.zeros(config.style_dim))
