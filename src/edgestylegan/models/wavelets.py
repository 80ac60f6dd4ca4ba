"""Haar (db1) wavelet transforms in the packed 4C-channel layout MobileStyleGAN uses.

Layout of a packed tensor with C image channels: channels [0, C) hold LL; channels C + 3c + k hold band k of
channel c, with k = 0, 1, 2 = (LH, HL, HH). LH is high-pass along height, HL along width (pytorch_wavelets
conventions, mode "zero"). The pair is an exact inverse: dwt(idwt(x)) == x up to float round-off.

`idwt_haar(packed, channel_major=True)` reads the channel-major layout instead: channels [4c, 4c + 4) hold (LL, LH,
HL, HH) of channel c, and the transform is one grouped 1x1 convolution (each channel's four bands mixed by the 4x4
Haar synthesis matrix into its four output phases) and a pixel shuffle: two ops that OpenVINO runs in its blocked
layouts, where the band split, the elementwise sums and the stack of the packed form cost reorders
(`mobilestylegan.channel_major_packing` exports the model that way). The two forms agree to float round-off (they
sum in another order).
"""
import torch
import torch.nn.functional as F
from torch import nn


def _split_packed(packed: torch.Tensor):
    batch, channels4, height, width = packed.shape
    if channels4 % 4:
        raise ValueError(f"packed wavelet tensor needs a multiple of 4 channels, got {channels4}")
    channels = channels4 // 4
    low = packed[:, :channels]
    high = packed[:, channels:].reshape(batch, channels, 3, height, width)
    return low, high[:, :, 0], high[:, :, 1], high[:, :, 2]


# Row p = 2a + b (the pixel_shuffle phase of out[2i+a, 2j+b]), columns (LL, LH, HL, HH): the signs of idwt_haar.
_SYNTHESIS = 0.5 * torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0],
                                 [1.0, -1.0, -1.0, 1.0]])


def _idwt_channel_major(packed: torch.Tensor) -> torch.Tensor:
    channels4 = int(packed.shape[1])     # a Python int: the ONNX export stores the kernel as a constant
    if channels4 % 4:
        raise ValueError(f"packed wavelet tensor needs a multiple of 4 channels, got {channels4}")
    weight = _SYNTHESIS.to(packed.dtype).repeat(channels4 // 4, 1)[:, :, None, None]
    return F.pixel_shuffle(F.conv2d(packed, weight, groups=channels4 // 4), 2)


def channel_major_order(channels4: int) -> torch.Tensor:
    """Channel 4c + band of the channel-major layout <- this channel of the packed layout (band: LL, LH, HL, HH)."""
    quarter = channels4 // 4
    return torch.tensor([c if band == 0 else quarter + 3 * c + band - 1 for c in range(quarter) for band in range(4)])


def idwt_haar(packed: torch.Tensor, channel_major: bool = False) -> torch.Tensor:
    """[B, 4C, H, W] packed coefficients (module docstring: either layout) -> [B, C, 2H, 2W] image."""
    if channel_major:
        return _idwt_channel_major(packed)
    ll, lh, hl, hh = _split_packed(packed)
    batch, channels, height, width = ll.shape
    # out[2i+a, 2j+b] = (LL + (-1)^a LH + (-1)^b HL + (-1)^(a+b) HH) / 2; pixel_shuffle puts phase a*2+b there.
    ll_p_hh, ll_m_hh = ll + hh, ll - hh
    lh_p_hl, lh_m_hl = lh + hl, lh - hl
    phases = torch.stack(
        (ll_p_hh + lh_p_hl, ll_m_hh + lh_m_hl, ll_m_hh - lh_m_hl, ll_p_hh - lh_p_hl), dim=2
    )
    return F.pixel_shuffle(0.5 * phases.reshape(batch, 4 * channels, height, width), 2)


def dwt_haar(image: torch.Tensor) -> torch.Tensor:
    """[B, C, 2H, 2W] image -> [B, 4C, H, W] packed coefficients (exact inverse of idwt_haar)."""
    batch, channels, height2, width2 = image.shape
    if height2 % 2 or width2 % 2:
        raise ValueError(f"Haar DWT needs even spatial size, got {height2}x{width2}")
    phases = F.pixel_unshuffle(image, 2).reshape(batch, channels, 4, height2 // 2, width2 // 2)
    x00, x01, x10, x11 = phases.unbind(dim=2)
    s0, d0 = x00 + x01, x00 - x01
    s1, d1 = x10 + x11, x10 - x11
    ll = 0.5 * (s0 + s1)
    lh = 0.5 * (s0 - s1)
    hl = 0.5 * (d0 + d1)
    hh = 0.5 * (d0 - d1)
    high = torch.stack((lh, hl, hh), dim=2).reshape(batch, 3 * channels, height2 // 2, width2 // 2)
    return torch.cat((ll, high), dim=1)


class HaarIDWT(nn.Module):
    """Module wrapper so the inverse transform shows up as its own (float) node in the module tree."""

    def __init__(self, channel_major: bool = False):
        super().__init__()
        self.channel_major = channel_major

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return idwt_haar(packed, self.channel_major)


class HaarDWT(nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return dwt_haar(image)
