import torch

from edgestylegan.models.wavelets import dwt_haar, idwt_haar


def test_dwt_inverts_idwt():
    torch.manual_seed(0)
    packed = torch.randn(2, 12, 8, 8, dtype=torch.float64)
    assert (dwt_haar(idwt_haar(packed)) - packed).abs().max() <= 1e-6
    image = torch.randn(2, 3, 16, 16)
    assert (idwt_haar(dwt_haar(image)) - image).abs().max() <= 1e-6


def test_idwt_matches_closed_form_and_band_layout():
    # Channel C + 3c + k is band k (LH, HL, HH) of channel c; out[2i+a, 2j+b] = (LL +- LH +- HL +- HH) / 2.
    packed = torch.zeros(1, 8, 1, 1)
    ll, lh, hl, hh = 1.0, 2.0, 3.0, 5.0
    c = 1  # second image channel
    packed[0, c, 0, 0] = ll
    packed[0, 2 + 3 * c + 0, 0, 0] = lh
    packed[0, 2 + 3 * c + 1, 0, 0] = hl
    packed[0, 2 + 3 * c + 2, 0, 0] = hh
    out = idwt_haar(packed)[0, c]
    for a in (0, 1):
        for b in (0, 1):
            expected = 0.5 * (ll + (-1) ** a * lh + (-1) ** b * hl + (-1) ** (a + b) * hh)
            assert out[a, b].item() == expected
    assert idwt_haar(packed)[0, 0].abs().max() == 0


def test_constant_image_has_only_lowpass():
    coeffs = dwt_haar(torch.ones(1, 3, 4, 4))
    assert torch.allclose(coeffs[:, :3], torch.full((1, 3, 2, 2), 2.0))
    assert coeffs[:, 3:].abs().max() == 0


def test_channel_major_layout_is_the_same_transform_as_a_grouped_conv():
    packed = torch.randn(2, 4 * 5, 3, 3, dtype=torch.float64)
    quarter = 5
    order = torch.tensor([c if band == 0 else quarter + 3 * c + band - 1 for c in range(quarter) for band in range(4)])
    torch.testing.assert_close(idwt_haar(packed[:, order], channel_major=True), idwt_haar(packed), rtol=0, atol=1e-12)
    assert (idwt_haar(packed, channel_major=True) - idwt_haar(packed)).abs().max() > 0.1
    torch.testing.assert_close(dwt_haar(idwt_haar(packed[:, order], channel_major=True)), packed, rtol=0, atol=1e-12)
