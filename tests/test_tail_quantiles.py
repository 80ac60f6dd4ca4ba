import numpy as np
import pytest

from edgestylegan.compress.tail_quantiles import SMALL, nncf_quantile_reducer, quantile


def _activation(shape, seed=0):
    x = (np.random.default_rng(seed).standard_normal(shape) ** 3).astype(np.float32)
    x.reshape(-1)[:17] = x.max()        # ties at the top
    x.reshape(-1)[-9:] = x.min()        # and at the bottom
    return x


@pytest.mark.parametrize("axes", [(0, 1, 2, 3), (0, 2, 3)])
@pytest.mark.parametrize("q", [(1e-4,), (0.9999,), (1e-4, 0.9999), (0.5,), (0.0,), (1.0,), 0.999])
def test_equals_numpy_bit_for_bit(axes, q):
    x = _activation((1, 4, 256, 256))
    assert 256 * 256 >= SMALL            # both axes sets take the selection path
    got = quantile(x, q, axes, keepdims=True)
    want = np.quantile(x.astype(np.float64), q, axis=axes, keepdims=True)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)
    assert np.array_equal(quantile(x, q, axes), np.quantile(x.astype(np.float64), q, axis=axes))


def test_tail_quantiles_of_a_large_tensor_are_found_by_selection_not_by_numpy(monkeypatch):
    x = _activation((1, 4, 256, 256), seed=2)
    want = np.quantile(x.astype(np.float64), (1e-4,), axis=(0, 2, 3), keepdims=True)

    def full_quantile(*args, **kwargs):
        raise AssertionError("np.quantile was called: the selection fell back")

    monkeypatch.setattr(np, "quantile", full_quantile)
    assert np.array_equal(quantile(x, (1e-4,), (0, 2, 3), keepdims=True), want)
    assert quantile(x, (0.9999,), (0, 1, 2, 3)).shape == (1,)


def test_few_distinct_values_and_nan_and_small_tensors():
    coarse = np.random.default_rng(1).integers(0, 3, (1, 2, 300, 300)).astype(np.float32)
    for q in ((1e-4,), (0.9999,)):
        assert np.array_equal(quantile(coarse, q, (0, 1, 2, 3)), np.quantile(coarse.astype(np.float64), q, axis=(0, 1, 2, 3)))
    nan = _activation((1, 2, 300, 300))
    nan[0, 1, 7, 7] = np.nan
    assert np.array_equal(quantile(nan, (0.9999,), (0, 2, 3)),
                          np.quantile(nan.astype(np.float64), (0.9999,), axis=(0, 2, 3)), equal_nan=True)
    small = _activation((1, 3, 8, 8))
    assert np.array_equal(quantile(small, (1e-4,), (0, 1, 2, 3)), np.quantile(small.astype(np.float64), (1e-4,), axis=(0, 1, 2, 3)))


def test_nncf_reducer_gives_its_own_values_inside_the_context():
    from nncf.common.tensor_statistics.collectors import QuantileReducer
    from nncf.tensor import Tensor

    x = _activation((1, 4, 256, 256), seed=3)
    reducer = QuantileReducer(axes=(0, 2, 3), quantile=[1e-4, 0.9999])
    original = QuantileReducer._reduce_out_of_place
    want = [t.data for t in reducer._reduce_out_of_place([Tensor(x)])]
    with nncf_quantile_reducer():
        assert QuantileReducer._reduce_out_of_place is not original
        got = [t.data for t in reducer._reduce_out_of_place([Tensor(x)])]
    assert QuantileReducer._reduce_out_of_place is original
    assert len(got) == len(want) == 2 and all(np.array_equal(g, w) for g, w in zip(got, want))
