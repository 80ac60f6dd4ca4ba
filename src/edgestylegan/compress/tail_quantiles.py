"""Exact tail quantiles of large activations, for NNCF's calibration.

NNCF's `QuantileReducer` (behind quantize.range_estimator mean_quantile) computes each activation's 1e-4 and 1 - 1e-4
quantiles with `np.quantile` on a float64 copy of the whole tensor: a full introselect of up to 67 M values per
tensor, calibration latent and quantile, which is two thirds of `nncf.quantize`'s time on the 1024² teacher
(121 of 191 s on the 2-core AVX2 machine). Neither NNCF nor NumPy has a selection that exploits how far out in the
tail these order statistics are, so this module does: a threshold from a random sample bounds a small candidate set
that provably holds the needed order statistics, and only that set is partitioned. The values, and NumPy's
interpolation between them, are those of `np.quantile(x.astype(float64), q, method="linear")`, bit for bit; anything
else (NaNs, small tensors, a threshold that did not bound enough candidates) takes `np.quantile` itself.
"""
from __future__ import annotations

import contextlib

import numpy as np

SMALL = 1 << 16
"""Tensors with fewer values per quantile go to np.quantile directly (it is fast there, and vectorised over rows)."""
SAMPLE = 8192
"""Random values per row from which the candidate threshold is picked."""


def quantile(x: np.ndarray, q, axis: tuple[int, ...], keepdims: bool = False) -> np.ndarray:
    """`np.quantile(x.astype(np.float64), q, axis=axis, keepdims=keepdims)` (method linear), computed by selection."""
    qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
    axis = tuple(a % x.ndim for a in axis)
    kept = [a for a in range(x.ndim) if a not in axis]
    rows = np.transpose(x, kept + list(axis)).reshape(int(np.prod([x.shape[a] for a in kept])), -1)
    if rows.shape[1] < SMALL:
        return np.quantile(x.astype(np.float64), q, axis=axis, keepdims=keepdims)
    out = np.empty((len(qs), len(rows)), dtype=np.float64)
    for r, row in enumerate(rows):
        out[:, r] = _row_quantiles(row, qs)
    shape = [1 if a in axis else x.shape[a] for a in range(x.ndim)] if keepdims else [x.shape[a] for a in kept]
    out = out.reshape([len(qs)] + shape)
    return out if np.ndim(q) else out[0]


def _row_quantiles(row: np.ndarray, qs: np.ndarray) -> list[np.float64]:
    """Each quantile of `row`; the random sample and the NaN scan are shared by all of them."""
    if np.isnan(row).any():
        return list(np.quantile(row.astype(np.float64), qs))
    sample = np.sort(row[np.random.default_rng(0).integers(0, row.size, SAMPLE)])
    return [_row_quantile(row, q, sample) for q in qs]


def _row_quantile(row: np.ndarray, q: float, sample: np.ndarray) -> np.float64:
    n = row.size
    virtual = (n - 1) * q                      # NumPy's linear-method virtual index, interpolation and edge handling
    if not 0.0 < virtual < n - 1:
        return np.quantile(row.astype(np.float64), q)
    below = int(np.floor(virtual))
    ranks = _order_statistics(row, below, below + 1, sample)
    if ranks is None:
        return np.quantile(row.astype(np.float64), q)
    a, b = (np.float64(v) for v in ranks)
    gamma = np.float64(virtual) - np.float64(below)
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def _order_statistics(row: np.ndarray, lo: int, hi: int, sample: np.ndarray) -> tuple | None:
    """The lo-th and hi-th smallest values of `row` (lo < hi, no NaN), found among the values at or beyond a threshold
    read off `sample` (SAMPLE sorted random values of `row`); None when the threshold turned out to bound too few
    candidates."""
    n = row.size
    from_top = lo >= n // 2
    needed = n - lo if from_top else hi + 1          # how many of the smallest / largest values must be candidates
    margin = int(np.ceil(2 * needed * SAMPLE / n)) + 16
    if margin >= SAMPLE:
        return None
    if from_top:
        candidates = row[row >= sample[SAMPLE - 1 - margin]]
        offset = n - candidates.size                # candidates hold every value >= the threshold: the top ranks
    else:
        candidates = row[row <= sample[margin]]
        offset = 0
    if candidates.size < needed:
        return None
    part = np.partition(candidates, (lo - offset, hi - offset))
    return part[lo - offset], part[hi - offset]


@contextlib.contextmanager
def nncf_quantile_reducer():
    """NNCF's `QuantileReducer` computing its quantiles with `quantile` above while the context is open (NumPy
    tensors, the OpenVINO backend's; other backends keep NNCF's own code)."""
    from nncf.common.tensor_statistics import collectors
    from nncf.common.tensor_statistics.collectors import determine_reduction_axes
    from nncf.tensor import Tensor, functions as fns

    reducer = collectors.QuantileReducer
    original = reducer._reduce_out_of_place

    def reduce(self, x: list) -> list:
        data = x[0].data
        if not isinstance(data, np.ndarray):
            return original(self, x)
        axes = determine_reduction_axes(data.ndim, self._axes, self._axes_mode)
        return fns.unstack(Tensor(quantile(data, tuple(self._quantile), tuple(axes), self._keepdims)), axis=0)

    reducer._reduce_out_of_place = reduce
    try:
        yield
    finally:
        reducer._reduce_out_of_place = original
