import pytest
import torch

from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig, channel_major_packing, latents_from_seeds


def test_output_shape_and_heads(tiny_config):
    gen = Generator(GeneratorConfig(**{**tiny_config.to_dict(), "all_heads": True})).eval()
    z = latents_from_seeds([0, 1], 32)
    img, freqs = gen.synthesis(gen.style(z), return_freqs=True)
    assert img.shape == (2, 3, 32, 32)
    assert [f.shape[-1] for f in freqs] == [4, 8, 16]
    assert all(f.shape[1] == 12 for f in freqs)


def test_truncation(tiny_generator):
    z = latents_from_seeds([3, 4], 32)
    with torch.no_grad():
        w = tiny_generator.style(z)
        assert torch.equal(tiny_generator.style(z, 1.0), w)
        assert torch.allclose(tiny_generator.style(z, 0.0), tiny_generator.w_avg.expand_as(w))
        half = tiny_generator.style(z, 0.5)
        assert torch.allclose(half, tiny_generator.w_avg + 0.5 * (w - tiny_generator.w_avg), atol=1e-6)


def test_noise_modes(tiny_generator):
    z = latents_from_seeds([0], 32)
    with torch.no_grad():
        for block in tiny_generator.synthesis.blocks:
            block.conv1.noise.noise_strength.fill_(0.5)
        fixed_a, fixed_b = tiny_generator(z), tiny_generator(z)
        torch.manual_seed(1)
        random_a = tiny_generator(z, noise_mode="random")
        torch.manual_seed(2)
        random_b = tiny_generator(z, noise_mode="random")
    assert torch.equal(fixed_a, fixed_b)
    assert not torch.equal(random_a, random_b)
    with pytest.raises(ValueError, match="noise_mode"):
        tiny_generator(z, noise_mode="bogus")


def test_seeded_latents_do_not_depend_on_batch():
    assert torch.equal(latents_from_seeds([5, 6])[1], latents_from_seeds([6])[0])


def test_bad_config():
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(resolution=300)
    with pytest.raises(ValueError, match="unknown generator config keys"):
        GeneratorConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize("config", [
    GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32, 32)),
    GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32), arch="blaze"),
    GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32, 32), all_heads=True),
])
def test_channel_major_packing_makes_the_same_images(config):
    torch.manual_seed(0)
    gen = Generator(config).eval()
    gen.estimate_w_avg(64)
    with torch.no_grad():     # a pruned model too: the permutation moves zeros with their rows
        gen.synthesis.blocks[0].conv2.conv.pointwise.weight[:, ::2] = 0.0
    state = {k: v.clone() for k, v in gen.state_dict().items()}
    packed = channel_major_packing(gen)
    z = torch.randn(3, config.style_dim)
    with torch.no_grad():
        img, freqs = gen.synthesis(gen.style(z), return_freqs=True)
        img2, freqs2 = packed.synthesis(packed.style(z), return_freqs=True)
    torch.testing.assert_close(img2, img, rtol=0, atol=1e-5 * float(img.abs().max()))
    for a, b in zip(freqs[:-1], freqs2[:-1]):   # non-final heads (all_heads) sum their permuted inputs in another order
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))
    if config.arch == "mobilestylegan":         # the last head's rows are channel-major too
        assert not torch.equal(freqs2[-1], freqs[-1])
        order = [c if band == 0 else 3 + 3 * c + band - 1 for c in range(3) for band in range(4)]
        torch.testing.assert_close(freqs2[-1], freqs[-1][:, order], rtol=0, atol=1e-5 * float(freqs[-1].abs().max()))
    assert all(torch.equal(v, gen.state_dict()[k]) for k, v in state.items())   # the original is untouched
    moved = packed.synthesis.blocks[0].up.modulation.weight
    assert not torch.equal(moved, gen.synthesis.blocks[0].up.modulation.weight)
    assert torch.equal(moved.sort(dim=0).values, gen.synthesis.blocks[0].up.modulation.weight.sort(dim=0).values)


def test_onnx_export_is_channel_major_and_computes_the_same_images(tmp_path):
    import onnx
    from onnx import numpy_helper

    from edgestylegan.runtimes.onnx import OnnxRuntimeGenerator, export_onnx

    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32, 32))).eval()
    gen.estimate_w_avg(64)
    path = export_onnx(gen, tmp_path / "g.onnx")
    z = torch.randn(2, 32)
    with torch.no_grad():
        ref = gen(z, 0.7)
    torch.testing.assert_close(OnnxRuntimeGenerator(path)(z, 0.7), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
    name = "synthesis.blocks.0.up.modulation.weight"
    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}[f"gen.{name}"]
    assert torch.equal(torch.tensor(stored), channel_major_packing(gen).state_dict()[name])
    assert not torch.equal(torch.tensor(stored), gen.state_dict()[name])
