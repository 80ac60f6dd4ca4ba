"""Sparse storage (bitmask + values, float32 or int8): exact round trips and files that shrink with sparsity."""
import json
import struct

import pytest
import torch

from edgestylegan.compress.prune import prune_generator
from edgestylegan.compress.sparse import (FORMAT, decode_tensor, dequantize_int8, encode_tensor, file_breakdown,
                                          int8_plan, int8_weight_roundtrip, load_sparse_generator,
                                          noise_map_levels, NOISE_MAP_ERROR,
                                          quantize_int8, save_sparse_generator, sparse_bytes, WEIGHT_LEVELS)
from edgestylegan.compress.reconstruct import output_energy, weight_levels_for_error
from edgestylegan.io.atomic import safetensors_bytes
from edgestylegan.io.checkpoint import CheckpointError, save_generator
from edgestylegan.metrics.accounting import dense_file_bytes, state_dicts_equal
from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig, NoiseInjection
from edgestylegan.pipeline.loaders import LOADERS, load_model

TINY = GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32, 32))


def _bits(t):
    return t.contiguous().view(torch.int32)


def _gen(amount=0.0, seed=0):
    torch.manual_seed(seed)
    gen = Generator(TINY).eval()
    gen.estimate_w_avg(64)
    if amount:
        prune_generator(gen, amount, targets="all")
    return gen


def _sparse(codecs):
    return {n for n, e in codecs.items() if e["codec"] != "raw"}


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
    with pytest.raises(ValueError, match="padding"):
        decode_tensor(mask | 1, values, [4])


def test_quantize_int8_per_row_keeps_zeros_and_bounds_error():
    w = torch.randn(6, 5, 3, 3)
    w[w.abs() < 0.7] = 0.0
    w[2] = 0.0                                   # an all-zero row
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (6,) and scale[2] == 0
    assert int(q.abs().max()) == 127 and bool(q[w == 0].eq(0).all())
    back = dequantize_int8(q, scale)
    assert bool(back[w == 0].eq(0).all()) and not bool(torch.signbit(back[w == 0]).any())
    assert bool(((back - w).abs() <= scale.view(-1, 1, 1, 1) / 2 + 1e-7).all())
    qt, st = quantize_int8(torch.randn(1, 1, 8, 8), per_row=False)
    assert st.shape == (1,)


@pytest.mark.parametrize("strength", [0.0, 1e-5, 7e-4, 0.08, 0.25, 10.0])
def test_noise_map_levels_bound_the_added_error(strength):
    noise_map = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    levels = noise_map_levels(noise_map, strength)
    q, scale = quantize_int8(noise_map, per_row=False, levels=levels)
    assert int(q.abs().max()) == levels
    added = strength * (dequantize_int8(q, scale) - noise_map)
    if levels < 127:                                 # the error bound holds (rounding error RMS <= step / sqrt(12))
        assert float(added.square().mean().sqrt()) <= NOISE_MAP_ERROR
    else:                                            # no level count reaches it: the full int8 range, as for weights
        assert strength * float(scale) * 127 / 63 / 12 ** 0.5 > NOISE_MAP_ERROR
    fewer = (levels - 1) // 2                        # one bit less would miss the bound
    if fewer >= 1:
        assert strength * float(scale) * levels / fewer / 12 ** 0.5 > NOISE_MAP_ERROR
    assert (levels == 1) == (strength <= 1e-5) and (levels == 127) == (strength >= 0.08)


def test_int8_file_stores_weak_noise_maps_in_fewer_bytes(tmp_path):
    gen = _gen(0.5)
    noise = [m for m in gen.modules() if isinstance(m, NoiseInjection)]
    sizes = {}
    for strength in (1.0, 1e-4):
        with torch.no_grad():
            for m in noise:
                m.noise_strength.fill_(strength)
        path = tmp_path / f"{strength}.safetensors"
        save_sparse_generator(gen, path, values="int8")
        back = load_sparse_generator(path)
        assert state_dicts_equal(back.state_dict(), int8_weight_roundtrip(gen).state_dict())
        sizes[strength] = sum(v["bytes"]["q"] for n, v in file_breakdown(path).items() if n.endswith("noise_map"))
    assert sizes[1e-4] < sizes[1.0] / 2


@pytest.mark.parametrize("amount", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("deflate", [False, True])
def test_float32_round_trip_exact_and_file_shrinks(tmp_path, amount, deflate):
    gen = _gen(amount)
    path = tmp_path / "g.safetensors"
    codecs = save_sparse_generator(gen, path, deflate=deflate)
    assert set(codecs) == set(gen.state_dict())
    back = load_sparse_generator(path)
    assert state_dicts_equal(back.state_dict(), gen.state_dict())
    assert isinstance(load_model(path), Generator)
    z = torch.randn(2, TINY.style_dim)
    with torch.no_grad():
        assert torch.equal(back(z), gen(z))
    dense = dense_file_bytes(gen)
    size = path.stat().st_size
    sparse = _sparse(codecs)
    if amount == 0:
        assert not sparse and size <= dense + 128 * len(codecs)   # nothing sparse enough: dense (+ codec map)
    else:
        # Expected payload: every sparse tensor costs its bitmask + non-zeros; the rest is stored as is.
        state = gen.state_dict()
        saved = sum(t.numel() * 4 - sparse_bytes(t) for n, t in state.items() if n in sparse)
        assert size < dense
        if deflate:
            assert any(e.get("deflate") for e in codecs.values())
            assert dense - size > saved - 4096 - 64 * len(state)   # deflate only ever shrinks a part
        else:
            assert abs((dense - size) - saved) < 4096 + 64 * len(state)   # headers / key names only


def test_sparse_file_bytes_scale_with_sparsity(tmp_path):
    for values in ("float32", "int8"):
        sizes = []
        for amount in (0.2, 0.5, 0.8):
            save_sparse_generator(_gen(amount), tmp_path / f"{amount}.safetensors", values=values)
            sizes.append((tmp_path / f"{amount}.safetensors").stat().st_size)
        assert sizes[0] > sizes[1] > sizes[2], values


@pytest.mark.parametrize("amount", [0.0, 0.8])
def test_int8_file_decodes_to_the_roundtrip_copy_bit_for_bit(tmp_path, amount):
    gen = _gen(amount)
    path = tmp_path / "g8.safetensors"
    codecs = save_sparse_generator(gen, path, values="int8")
    expected = int8_weight_roundtrip(gen)
    back = load_sparse_generator(path)
    assert state_dicts_equal(back.state_dict(), expected.state_dict())
    assert isinstance(load_model(path), Generator)
    z = torch.randn(2, TINY.style_dim)
    with torch.no_grad():
        assert torch.equal(back(z), expected(z))
        assert not torch.equal(expected(z), gen(z))             # it is really quantized ...
    assert state_dicts_equal(gen.state_dict(), _gen(amount).state_dict())   # ... and the original is untouched
    plan = int8_plan(gen)
    state, got = gen.state_dict(), back.state_dict()
    assert any(n.startswith("mapping.") for n in plan) and any(n.endswith("noise_map") for n in plan)
    for name, t in state.items():
        if name in plan:
            assert codecs[name]["codec"] in ("int8_row", "sparse_int8_row", "int8_tensor")
            assert bool(got[name][t == 0].eq(0).all())            # zeros preserved (pruned stay pruned)
        else:                                                     # biases, const, strengths, w_avg: float32 exact
            assert torch.equal(_bits(got[name]), _bits(t)), name
    if amount:
        assert {codecs[n]["codec"] for n in prune_targets(gen)} == {"sparse_int8_row"}


def _layer(rows=16, cols=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(cols, 4 * cols, generator=g) * torch.linspace(0.2, 2.0, cols)[:, None]
    return torch.randn(rows, cols, generator=g), x @ x.T / x.shape[1]


def _rounding_energy(weight, hessian, levels):
    q, scale = quantize_int8(weight, levels=levels)
    return output_energy(weight.double() - dequantize_int8(q, scale).double(), hessian)


@pytest.mark.parametrize("ratio", [0.02, 0.1, 0.5])
def test_weight_levels_meet_the_error_ratio_and_one_level_fewer_would_miss_it(ratio):
    dense, hessian = _layer()
    pruned = dense * (dense.abs() > dense.abs().quantile(0.6))
    levels = weight_levels_for_error({"w": pruned}, {"w": dense}, {"w": hessian}, ratio)["w"]
    budget = ratio * output_energy(dense.double() - pruned.double(), hessian)
    assert levels in WEIGHT_LEVELS
    assert _rounding_energy(pruned, hessian, levels) <= budget
    if levels != WEIGHT_LEVELS[0]:
        assert _rounding_energy(pruned, hessian, WEIGHT_LEVELS[WEIGHT_LEVELS.index(levels) - 1]) > budget


def test_weight_levels_fall_with_the_pruning_error_and_a_dense_layer_keeps_8_bits():
    dense, hessian = _layer(seed=1)
    chosen = [weight_levels_for_error({"w": dense * (dense.abs() > dense.abs().quantile(a))}, {"w": dense},
                                      {"w": hessian}, 0.05)["w"] for a in (0.1, 0.5, 0.9)]
    assert chosen == sorted(chosen, reverse=True) and chosen[0] > chosen[-1], chosen
    assert weight_levels_for_error({"w": dense}, {"w": dense}, {"w": hessian}, 0.05)["w"] == 127


def test_int8_file_with_fewer_weight_levels_decodes_bit_for_bit_and_is_smaller(tmp_path):
    gen = _gen(0.8)
    levels = {name: 7 for name in prune_targets(gen)}
    full, coarse = tmp_path / "full.safetensors", tmp_path / "coarse.safetensors"
    save_sparse_generator(gen, full, values="int8")
    save_sparse_generator(gen, coarse, values="int8", weight_levels=levels)
    back = load_sparse_generator(coarse)
    assert state_dicts_equal(back.state_dict(), int8_weight_roundtrip(gen, levels).state_dict())
    assert coarse.stat().st_size < full.stat().st_size
    for name in levels:                              # codes in [-7, 7]: at most 15 distinct values per row
        assert max(len(torch.unique(row)) for row in back.state_dict()[name].flatten(1)) <= 15
    with pytest.raises(ValueError, match="w_avg"):
        int8_plan(gen, {"w_avg": 7})


def prune_targets(gen):
    from edgestylegan.compress.prune import select_targets

    return list(select_targets(gen, "all"))


@pytest.mark.parametrize("deflate", [False, True])
def test_int8_file_is_much_smaller_than_float32_and_matches_payload(tmp_path, deflate):
    gen = _gen(0.8)
    f32, i8 = tmp_path / "f32.safetensors", tmp_path / "i8.safetensors"
    save_sparse_generator(gen, f32, deflate=deflate)
    codecs = save_sparse_generator(gen, i8, values="int8", deflate=deflate)
    # Expected payload: mask bits + one byte per non-zero code (+ scales) for sparse weights, one byte per entry
    # (+ scales) for dense int8 ones, float32 for the rest.
    payload = 0
    for name, t in gen.state_dict().items():
        codec, n = codecs[name]["codec"], t.numel()
        if codec == "sparse_int8_row":
            q, _ = quantize_int8(t)
            payload += (n + 7) // 8 + int((q != 0).sum()) + 4 * t.shape[0]
        elif codec in ("int8_row", "int8_tensor"):
            payload += n + 4 * (t.shape[0] if codec == "int8_row" else 1)
        else:
            assert codec == "raw"
            payload += 4 * n
    parts = sum(sum(e["bytes"].values()) for e in file_breakdown(i8).values())
    if deflate:
        assert parts < payload
    else:
        assert parts == payload
    data = i8.read_bytes()
    assert len(data) == 8 + struct.unpack("<Q", data[:8])[0] + parts   # the rest is the header
    assert len(data) - parts < 512 * len(codecs)
    parts_f32 = sum(sum(e["bytes"].values()) for e in file_breakdown(f32).values())
    assert parts < 0.5 * parts_f32            # (in a tiny net the header weighs as much as the tensors)


def _rewrite(src, dst, edit):
    """Copy a sparse file with its tensors / metadata changed by `edit(tensors, meta)`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(src))
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    edit(tensors, meta)
    dst.write_bytes(safetensors_bytes(tensors, meta))
    return dst


def _first(codecs, codec):
    return next(n for n, e in codecs.items() if e["codec"] == codec)


def test_corrupt_int8_files_raise_checkpoint_error_naming_the_file(tmp_path):
    gen = _gen(0.8)
    src = tmp_path / "ok.safetensors"
    codecs = save_sparse_generator(gen, src, values="int8", deflate=False)
    sparse_name, dense_name = _first(codecs, "sparse_int8_row"), _first(codecs, "int8_row")

    def truncate_values(t, m):
        t[f"{sparse_name}::q"] = t[f"{sparse_name}::q"][:-3].clone()

    def wrong_scale_count(t, m):
        t[f"{dense_name}::scale"] = t[f"{dense_name}::scale"][:-1].clone()

    def negative_scale(t, m):
        t[f"{dense_name}::scale"] = -t[f"{dense_name}::scale"]

    def missing_part(t, m):
        del t[f"{sparse_name}::mask"]

    def unknown_codec(t, m):
        c = json.loads(m["codecs"])
        c[dense_name]["codec"] = "int4_row"
        m["codecs"] = json.dumps(c)

    def bad_codec_map(t, m):
        m["codecs"] = "{not json"

    for edit in (truncate_values, wrong_scale_count, negative_scale, missing_part, unknown_codec, bad_codec_map):
        bad = _rewrite(src, tmp_path / f"{edit.__name__}.safetensors", edit)
        with pytest.raises(CheckpointError, match=edit.__name__):
            load_sparse_generator(bad)


def test_corrupt_deflated_part_raises_checkpoint_error(tmp_path):
    src = tmp_path / "ok.safetensors"
    codecs = save_sparse_generator(_gen(0.8), src, values="int8")
    name = next(n for n, e in codecs.items() if "q" in e.get("deflate", []))

    def cut_stream(t, m):
        t[f"{name}::q"] = t[f"{name}::q"][:-5].clone()

    def flip_bytes(t, m):
        t[f"{name}::q"] = t[f"{name}::q"].flip(0).clone()

    for edit in (cut_stream, flip_bytes):
        with pytest.raises(CheckpointError, match=edit.__name__):
            load_sparse_generator(_rewrite(src, tmp_path / f"{edit.__name__}.safetensors", edit))


def test_truncated_file_raises_checkpoint_error(tmp_path):
    src = tmp_path / "ok.safetensors"
    save_sparse_generator(_gen(0.8), src, values="int8")
    data = src.read_bytes()
    header = 8 + struct.unpack("<Q", data[:8])[0]
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: header + (len(data) - header) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_sparse_generator(bad)


def test_loader_registry_and_format(tmp_path):
    assert LOADERS[FORMAT] is load_sparse_generator
    gen = _gen(0.5)
    for values in ("float32", "int8"):
        save_sparse_generator(gen, tmp_path / f"{values}.safetensors", values=values)
        assert isinstance(load_model(tmp_path / f"{values}.safetensors"), Generator)
    with pytest.raises(ValueError, match="values"):
        save_sparse_generator(gen, tmp_path / "x.safetensors", values="int4")


def test_loader_rejects_other_formats(tmp_path):
    gen = Generator(TINY)
    save_generator(gen, tmp_path / "dense.safetensors")
    with pytest.raises(CheckpointError, match="sparse_generator"):
        load_sparse_generator(tmp_path / "dense.safetensors")
