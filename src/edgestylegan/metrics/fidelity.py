"""Distribution metrics on features (torch-fidelity's implementations) and paired fidelity on images.

* Frechet distance: torch-fidelity's estimator of the statistics (TTUR, Heusel et al. 2017). With N samples in a
  d-dimensional space the covariance has rank <= N - 1, so FD is biased upward when N < d; compare variants
  with the noise floor (the teacher against itself at the same N), never with published FID values. Between two
  feature sets the trace of sqrt(S_a S_b) is taken from the N_a x N_b cross-Gram matrix (`frechet_distance`);
  against stored statistics (no features) torch-fidelity's scipy `sqrtm` is used.
* Kernel distance (KID, Binkowski et al. 2018): torch-fidelity `metric_kid`, cubic polynomial kernel,
  unbiased MMD^2, mean and std over random subsets drawn from a seeded RandomState.
* Precision / recall (Kynkaanniemi et al. 2019): torch-fidelity `metric_prc`, k = 3.
* Paired fidelity on the same latents and noise: PSNR and SSIM from scikit-image, on uint8 images
  (data range 255). SSIM uses Wang et al. (2004)'s settings: 11x11 Gaussian window, sigma 1.5,
  population covariance. Image pairs are scored on as many threads as torch uses (scikit-image's filters release the
  GIL: 256 pairs at 256² in 4.0 s instead of 6.8 s on two cores).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from ..errors import UserError

#----------------------------------------------------------------------------
# Distribution metrics.


def feature_statistics(features: torch.Tensor) -> dict:
    """[N, d] -> {"mu": [d], "sigma": [d, d]} in float64 (torch-fidelity's estimator)."""
    stats = fid_features_to_statistics(features.detach().cpu().float())
    return {"mu": stats["mu"].astype(np.float64), "sigma": np.asarray(stats["sigma"], dtype=np.float64)}


def frechet_distance_stats(stats_a: dict, stats_b: dict) -> float:
    a = {"mu": np.asarray(stats_a["mu"], np.float64), "sigma": np.asarray(stats_a["sigma"], np.float64)}
    b = {"mu": np.asarray(stats_b["mu"], np.float64), "sigma": np.asarray(stats_b["sigma"], np.float64)}
    if a["mu"].shape != b["mu"].shape:
        raise UserError(f"cannot compare statistics of {a['mu'].shape[0]}-d and {b['mu'].shape[0]}-d features")
    return float(fid_statistics_to_metric(a, b, verbose=False)[KEY_METRIC_FID])


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """FD between two feature sets, exactly as from their statistics, without a d x d matrix square root.

    Hand-written because torch-fidelity (and clean-fid) only offer scipy `sqrtm` of the d x d product, ~10 s for
    2048-d Inception features on two cores, twice per evaluated variant. With centred features A [N_a, d] and
    B [N_b, d], S_a S_b has the nonzero eigenvalues of M M^T, M = A B^T / sqrt((N_a - 1)(N_b - 1)), so
    tr sqrt(S_a S_b) is the sum of M's singular values (an N_a x N_b SVD; agrees with `sqrtm` to ~1e-6 relative,
    tests/test_fidelity.py)."""
    a, b = features_a.detach().cpu().double().numpy(), features_b.detach().cpu().double().numpy()
    if a.shape[1] != b.shape[1]:
        raise UserError(f"cannot compare {a.shape[1]}-d and {b.shape[1]}-d features")
    mu_a, mu_b = a.mean(0), b.mean(0)
    a_c, b_c = a - mu_a, b - mu_b
    scale_a, scale_b = len(a) - 1, len(b) - 1
    cross = a_c @ b_c.T / np.sqrt(scale_a * scale_b)
    trace_sqrt = np.linalg.svd(cross, compute_uv=False).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.sum(a_c * a_c) / scale_a + np.sum(b_c * b_c) / scale_b
                 - 2 * trace_sqrt)


def kernel_distance(features_a: torch.Tensor, features_b: torch.Tensor, subsets: int, subset_size: int,
                    seed: int) -> dict:
    """KID mean and std over `subsets` random subsets of `subset_size` (capped at the smaller set size)."""
    size = min(subset_size, len(features_a), len(features_b))
    out = kid_features_to_metric(features_a.cpu().double(), features_b.cpu().double(), kid_subsets=subsets,
                                 kid_subset_size=size, rng_seed=seed, verbose=False)
    return {"mean": float(out[KEY_METRIC_KID_MEAN]), "std": float(out[KEY_METRIC_KID_STD])}


def precision_recall(generated: torch.Tensor, reference: torch.Tensor, neighborhood: int = 3) -> dict:
    out = prc_features_to_metric(generated.cpu().float(), reference.cpu().float(), prc_neighborhood=neighborhood,
                                 save_cpu_ram=True, verbose=False)
    return {"precision": float(out[KEY_METRIC_PRECISION]), "recall": float(out[KEY_METRIC_RECALL])}


def distribution_metrics(generated: torch.Tensor, reference: torch.Tensor, fd_key: str, kid_key: str,
                         suffix: str, kid_subsets: int, kid_subset_size: int, seed: int,
                         with_precision_recall: bool) -> dict:
    """Every distribution metric of one feature space, keyed by the space's names (e.g. fd_enl0, kid_enl0)."""
    out = {fd_key: frechet_distance(generated, reference),
           kid_key: kernel_distance(generated, reference, kid_subsets, kid_subset_size, seed)}
    if with_precision_recall:
        pr = precision_recall(generated, reference)
        out[f"precision_{suffix}"] = pr["precision"]
        out[f"recall_{suffix}"] = pr["recall"]
    return out


def load_statistics(path: str | Path) -> dict:
    """Precomputed statistics in clean-fid's npz layout (`mu` [d], `sigma` [d, d])."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"eval.reference = {str(path)!r}: file not found (give `teacher` or a clean-fid .npz "
                        f"with arrays mu and sigma)")
    try:
        with np.load(path) as data:
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    except (KeyError, ValueError, OSError) as e:
        raise UserError(f"eval.reference = {str(path)!r} is not a statistics .npz with arrays mu and sigma: {e}") from e
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UserError(f"eval.reference = {str(path)!r}: mu {mu.shape} / sigma {sigma.shape} are not [d] / [d, d]")
    return {"mu": mu, "sigma": sigma}


#----------------------------------------------------------------------------
# Paired fidelity.


def _hwc(images: torch.Tensor | np.ndarray) -> np.ndarray:
    array = images.cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"expected uint8 images [N, 3, H, W], got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1))


def paired_fidelity(images: torch.Tensor, reference: torch.Tensor) -> dict:
    """PSNR / SSIM of each image against its reference (same latent), averaged over the set.

    `psnr_db` is the mean per-image PSNR over images that differ from their reference; identical images
    (infinite PSNR) are counted in `identical_images`, and when every image is identical `psnr_db` is None.
    """
    a, b = _hwc(images), _hwc(reference)
    if a.shape != b.shape:
        raise ValueError(f"paired sets differ in shape: {a.shape} vs {b.shape}")

    def score(pair: tuple[np.ndarray, np.ndarray]) -> tuple[float, float | None, float]:
        x, y = pair
        mse = mean_squared_error(y, x)
        psnr = peak_signal_noise_ratio(y, x, data_range=255) if mse > 0 else None
        return mse, psnr, structural_similarity(y, x, data_range=255, channel_axis=-1, gaussian_weights=True,
                                                sigma=1.5, use_sample_covariance=False)

    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        mses, psnrs, ssims = zip(*pool.map(score, zip(a, b))) if len(a) else ((), (), ())
    psnrs = [p for p in psnrs if p is not None]
    return {"ssim": float(np.mean(ssims)), "mse": float(np.mean(mses)), "identical_images": len(a) - len(psnrs),
            "psnr_db": float(np.mean(psnrs)) if psnrs else None}
