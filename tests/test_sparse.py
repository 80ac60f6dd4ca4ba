"""Sparse storage (bitmask + values): bitwise-exact round trips and files that shrink with sparsity."""
import pytest
import torch

from edgestylegan.compress.prune import prune_generator
from edgestylegan.compress.sparse import (decode_tensor, encode_tensor, load_sparse_generator, save_sparse_generator,
                                          sparse_bytes)
from edgestylegan.io.checkpoint import CheckpointError, save_generator
from edgestylegan.pipeline.loaders import load_model
from edgestylegan.metrics.accounting import dense_file_bytes, state_dicts_equal
from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig

TINY = GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32, 32))


def _bits(t):
    return t.contiguous().view(torch.int32)


def test_tensor_round_trip_is_bitwise_exact_including_signed_zero_and_nan():
    t = torch.randn(7, 13)
    t[t.abs() < 0.5] = 0.0
    t[0, 0], t[0, 1], t[1, 2] = -0.0, float("nan"), float("inf")
    mask, values = encode_tensor(t)
    back = decode_tensor(mask, values, list(t.shape))
    assert torch.equal(_bits(back), _bits(t))
    assert values.numel() == int((_bits(t) != 0).sum())   # -0.0 is kept as a value, +0.0 is not


def test_decode_rejects_inconsistent_mask():
    mask, values = encode_tensor(torch.tensor([1.0, 0.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="set bits"):
        decode_tensor(mask, values[:1], [4])


@pytest.mark.parametrize("amount", [0.0, 0.5, 0.9])
def test_generator_round_trip_exact_and_file_shrinks(tmp_path, amount):
    torch.manual_seed(0)
    gen = Generator(TINY).eval()
    if amount:
        prune_generator(gen, amount, targets="all")
    path = tmp_path / "g.safetensors"
    sparse = save_sparse_generator(gen, path)
    back = load_sparse_generator(path)
    assert state_dicts_equal(back.state_dict(), gen.state_dict())
    assert isinstance(load_model(path), Generator)
    z = torch.randn(2, TINY.style_dim)
    with torch.no_grad():
        assert torch.equal(back(z), gen(z))
    dense = dense_file_bytes(gen)
    size = path.stat().st_size
    if amount == 0:
        assert not sparse and size <= dense + 512      # nothing sparse enough: stored dense
    else:
        # Expected payload: every sparse tensor costs its bitmask + non-zeros; the rest is stored as is.
        state = gen.state_dict()
        saved = sum(t.numel() * 4 - sparse_bytes(t) for n, t in state.items() if n in sparse)
        assert size < dense
        assert abs((dense - size) - saved) < 4096 + 64 * len(sparse)   # headers / key names only


def test_sparse_file_bytes_scale_with_sparsity(tmp_path):
    sizes = []
    for amount in (0.2, 0.5, 0.8):
        torch.manual_seed(0)
        gen = Generator(TINY).eval()
        prune_generator(gen, amount)
        save_sparse_generator(gen, tmp_path / f"{amount}.safetensors")
        sizes.append((tmp_path / f"{amount}.safetensors").stat().st_size)
    assert sizes[0] > sizes[1] > sizes[2]


def test_loader_rejects_other_formats(tmp_path):
    gen = Generator(TINY)
    save_generator(gen, tmp_path / "dense.safetensors")
    with pytest.raises(CheckpointError, match="sparse_generator"):
        load_sparse_generator(tmp_path / "dense.safetensors")
