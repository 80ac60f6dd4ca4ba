"""StyleGAN2 (rosinality format) loader: tiny random checkpoints in that key format, loaded and checked against an
independent reference forward written here the way rosinality computes it (weight modulation + grouped conv)."""
import argparse
import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from edgestylegan.errors import CheckpointError
from edgestylegan.io.stylegan2_checkpoint import (StyleGAN2FormatError, generator_from_rosinality, load_rosinality,
                                                 to_rosinality_state_dict)

STYLE_DIM, N_MLP, LR_MLP = 16, 3, 0.01
CHANNELS = {4: 16, 8: 12, 16: 8, 32: 8}  # Tiny stand-in for config-f's {4: 512, ..., 1024: 32}.


def _blur_kernel():
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(k, k)
    return k / k.sum()


def make_rosinality_state(resolution=32, seed=0) -> dict:
    """A g_ema state dict with rosinality's key names, shapes and raw (equalized-lr) parametrisation."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s, std=1.0: torch.randn(*s, generator=g) * std  # noqa: E731
    sd = {}
    for k in range(1, N_MLP + 1):  # EqualLinear(lr_mul=0.01): raw weight ~ N(0, 1) / lr_mul.
        sd[f"style.{k}.weight"] = rnd(STYLE_DIM, STYLE_DIM) / LR_MLP
        sd[f"style.{k}.bias"] = rnd(STYLE_DIM, std=10.0)

    def modconv(prefix, cin, cout, k):
        sd[f"{prefix}.weight"] = rnd(1, cout, cin, k, k)
        sd[f"{prefix}.modulation.weight"] = rnd(cin, STYLE_DIM)
        sd[f"{prefix}.modulation.bias"] = 1 + rnd(cin, std=0.1)

    def styled(prefix, cin, cout, up):
        modconv(f"{prefix}.conv", cin, cout, 3)
        if up:
            sd[f"{prefix}.conv.blur.kernel"] = _blur_kernel() * 4
        sd[f"{prefix}.noise.weight"] = rnd(1, std=0.1)
        sd[f"{prefix}.activate.bias"] = rnd(cout, std=0.1)

    def to_rgb(prefix, cin, up):
        modconv(f"{prefix}.conv", cin, 3, 1)
        sd[f"{prefix}.bias"] = rnd(1, 3, 1, 1, std=0.1)
        if up:
            sd[f"{prefix}.upsample.kernel"] = _blur_kernel() * 4

    sd["input.input"] = rnd(1, CHANNELS[4], 4, 4)
    styled("conv1", CHANNELS[4], CHANNELS[4], False)
    to_rgb("to_rgb1", CHANNELS[4], False)
    log_size = int(math.log2(resolution))
    cin = CHANNELS[4]
    for i, res in enumerate(2**j for j in range(3, log_size + 1)):
        styled(f"convs.{2 * i}", cin, CHANNELS[res], True)
        styled(f"convs.{2 * i + 1}", CHANNELS[res], CHANNELS[res], False)
        to_rgb(f"to_rgbs.{i}", CHANNELS[res], True)
        cin = CHANNELS[res]
    for layer in range((log_size - 2) * 2 + 1):
        res = (layer + 5) // 2
        sd[f"noises.noise_{layer}"] = rnd(1, 1, 2**res, 2**res)
    return sd


def _upfirdn(x, kernel, up, pad):
    """Reference upfirdn2d: zero-insert by `up`, pad (pad0, pad1) on both axes, true convolution with `kernel`."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = torch.flip(kernel, [0, 1])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, weight, groups=c)


def reference_forward(sd: dict, z: torch.Tensor, truncation=1.0, w_avg=None) -> torch.Tensor:
    x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
    for k in range(1, N_MLP + 1):
        x = F.linear(x, sd[f"style.{k}.weight"] * (LR_MLP / math.sqrt(STYLE_DIM)))
        x = F.leaky_relu(x + sd[f"style.{k}.bias"] * LR_MLP, 0.2) * math.sqrt(2)
    w = x if w_avg is None else w_avg + truncation * (x - w_avg)
    batch = z.shape[0]

    def modconv(prefix, x, demod, up=False):
        weight = sd[f"{prefix}.weight"]
        _, cout, cin, k, _ = weight.shape
        style = F.linear(w, sd[f"{prefix}.modulation.weight"] / math.sqrt(STYLE_DIM), sd[f"{prefix}.modulation.bias"])
        weight = weight / math.sqrt(cin * k * k) * style.view(batch, 1, cin, 1, 1)
        if demod:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(batch, cout, 1, 1, 1)
        h, wd = x.shape[-2:]
        x = x.reshape(1, batch * cin, h, wd)
        if up:
            weight = weight.transpose(1, 2).reshape(batch * cin, cout, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = out.view(batch, cout, *out.shape[-2:])
            return _upfirdn(out, _blur_kernel() * 4, 1, (1, 1))
        out = F.conv2d(x, weight.reshape(batch * cout, cin, k, k), padding=k // 2, groups=batch)
        return out.view(batch, cout, *out.shape[-2:])

    def styled(prefix, x, noise, up=False):
        out = modconv(f"{prefix}.conv", x, True, up)
        out = out + sd[f"{prefix}.noise.weight"] * noise
        return F.leaky_relu(out + sd[f"{prefix}.activate.bias"].view(1, -1, 1, 1), 0.2) * math.sqrt(2)

    def to_rgb(prefix, x, skip):
        out = modconv(f"{prefix}.conv", x, False) + sd[f"{prefix}.bias"]
        if skip is not None:
            out = out + _upfirdn(skip, _blur_kernel() * 4, 2, (2, 1))
        return out

    noise = [sd[f"noises.noise_{k}"] for k in range(len([k for k in sd if k.startswith("noises.")]))]
    out = styled("conv1", sd["input.input"].repeat(batch, 1, 1, 1), noise[0])
    skip = to_rgb("to_rgb1", out, None)
    i = 0
    while f"to_rgbs.{i}.bias" in sd:
        out = styled(f"convs.{2 * i}", out, noise[2 * i + 1], up=True)
        out = styled(f"convs.{2 * i + 1}", out, noise[2 * i + 2])
        skip = to_rgb(f"to_rgbs.{i}", out, skip)
        i += 1
    return skip


def test_loader_matches_reference_forward():
    sd = make_rosinality_state()
    gen = generator_from_rosinality(sd, latent_avg=torch.zeros(STYLE_DIM))
    assert gen.resolution == 32 and gen.config.channels == (16, 12, 8, 8) and gen.config.mapping_layers == N_MLP
    z = torch.randn(3, STYLE_DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = gen(z, noise_mode="fixed")
        ref = reference_forward(sd, z)
    assert ours.shape == (3, 3, 32, 32)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4), (ours - ref).abs().max()


def test_file_round_trip_with_latent_avg_and_args(tmp_path):
    sd = make_rosinality_state(seed=3)
    latent_avg = torch.randn(STYLE_DIM)
    path = tmp_path / "stylegan2-tiny.pt"
    # Training checkpoints also carry g/d and an argparse.Namespace: the weights-only loader must accept them.
    torch.save({"g_ema": sd, "g": sd, "latent_avg": latent_avg, "args": argparse.Namespace(size=32)}, path)
    gen = load_rosinality(path)
    assert torch.equal(gen.w_avg, latent_avg)
    z = torch.randn(2, STYLE_DIM, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(gen(z, truncation=0.5), reference_forward(sd, z, 0.5, latent_avg), atol=1e-4, rtol=1e-4)
    back = to_rosinality_state_dict(gen)
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert torch.allclose(back[key], value, rtol=1e-5, atol=1e-5), key


def test_teacher_by_url_and_sha256(tmp_path):
    from edgestylegan.distill.teachers import load_teacher
    from edgestylegan.io.download import DownloadError

    sd = make_rosinality_state(seed=5)
    path = tmp_path / "g.pt"
    torch.save({"g_ema": sd}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    downloads = tmp_path / "downloads"
    teacher = load_teacher("stylegan2", tmp_path / "unused.safetensors", downloads, stylegan2_url=path.as_uri(),
                           stylegan2_sha256=digest)
    assert teacher.kind == "stylegan2" and teacher.sha256 == digest
    assert (downloads / "g.pt").read_bytes() == path.read_bytes()
    assert not any(p.requires_grad for p in teacher.model.parameters())
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        load_teacher("stylegan2", tmp_path / "unused.safetensors", tmp_path / "other", stylegan2_url=path.as_uri(),
                     stylegan2_sha256="0" * 64)


def test_bad_checkpoints_are_named(tmp_path):
    sd = make_rosinality_state()
    del sd["convs.1.conv.weight"]
    with pytest.raises(StyleGAN2FormatError, match="missing tensors.*convs.1.conv.weight"):
        generator_from_rosinality(sd)
    sd = make_rosinality_state()
    sd["convs.0.conv.blur.kernel"] = torch.ones(4, 4)
    with pytest.raises(StyleGAN2FormatError, match="blur kernel"):
        generator_from_rosinality(sd)
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(StyleGAN2FormatError, match="no `g_ema` entry"):
        load_rosinality(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read as a"):  # A user error (exit 2), not a traceback.
        load_rosinality(path)
