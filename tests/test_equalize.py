"""Cross-layer equalization (compress.equalize): the float function is kept, the ranges are really evened out."""
import pytest
import torch

from edgestylegan.compress.equalize import _channel_ranges, equalize_generator
from edgestylegan.models.mobilestylegan import ModulatedDWConv2d, latents_from_seeds


@pytest.fixture
def uneven(tiny_generator):
    """The tiny generator with styles and depthwise kernels spread over ~3 orders of magnitude per channel, and a
    few pointwise weights pruned to zero."""
    gen = tiny_generator
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in gen.synthesis.modules():
            if isinstance(m, ModulatedDWConv2d):
                spread = torch.exp(2 * torch.randn(m.modulation.out_features, generator=g))
                m.modulation.weight.mul_(spread[:, None])
                m.modulation.bias.mul_(spread)
                kernel_spread = torch.exp(torch.randn(m.depthwise.out_channels, generator=g))
                m.depthwise.weight.mul_(kernel_spread[:, None, None, None])
                m.pointwise.weight[:, ::3] = 0.0
    return gen


def _spread(ranges: torch.Tensor) -> float:
    return float(ranges.max() / ranges.min())


@torch.no_grad()
def test_equalization_keeps_the_float_images(uneven):
    calibration = latents_from_seeds(range(100, 108), uneven.style_dim)
    held_out = latents_from_seeds(range(200, 204), uneven.style_dim)
    equalized = equalize_generator(uneven, calibration, alpha=0.5)
    before, after = uneven(held_out), equalized(held_out)
    assert float((after - before).norm() / before.norm()) <= 1e-5
    changed = [n for (n, a), b in zip(uneven.state_dict().items(), equalized.state_dict().values())
               if not torch.equal(a, b)]
    assert any(n.endswith("depthwise.weight") for n in changed) and any(n.endswith("pointwise.weight") for n in changed)
    for (n, a), b in zip(uneven.state_dict().items(), equalized.state_dict().values()):
        if n.endswith("pointwise.weight"):
            assert torch.equal(a == 0, b == 0), n   # pruned zeros stay zero, no new ones


@torch.no_grad()
def test_equalization_evens_out_the_quantized_ranges(uneven):
    calibration = latents_from_seeds(range(100, 108), uneven.style_dim)
    before = _channel_ranges(uneven, calibration, 1.0, 4)
    # alpha = 1 moves the whole depthwise-output spread into the pointwise weights: both activations end up flat.
    after = _channel_ranges(equalize_generator(uneven, calibration, alpha=1.0), calibration, 1.0, 4)
    assert len(before) == len(after) == 2 * len(uneven.synthesis.blocks)
    for (in_before, out_before), (in_after, out_after) in zip(before.values(), after.values()):
        assert _spread(in_before) > 10 and _spread(out_before) > 10
        assert _spread(in_after) == pytest.approx(1.0, abs=1e-4)
        assert _spread(out_after) == pytest.approx(1.0, abs=1e-4)


def test_alpha_outside_the_unit_interval_is_refused(tiny_generator):
    with pytest.raises(ValueError, match="alpha"):
        equalize_generator(tiny_generator, latents_from_seeds([0], tiny_generator.style_dim), alpha=1.5)
