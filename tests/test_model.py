import pytest
import torch

from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig, latents_from_seeds


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
