"""Metric code on tiny inputs, against closed forms: FD of a set with itself ~ 0 and of an affine copy as for
Gaussians, precision / recall 1 against itself and 0 against a far-away set, PSNR of a one-level offset."""
import math

import numpy as np
import pytest
import torch

from edgestylegan.errors import UserError
from edgestylegan.metrics.features import extract_features
from edgestylegan.metrics.fidelity import (distribution_metrics, feature_statistics, frechet_distance,
                                           frechet_distance_stats, kernel_distance, load_statistics, paired_fidelity)


def _features(n=64, d=16, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()


def _tiny_images(n=12, size=32, seed=0):
    """Smooth random colour blobs, uint8 [n, 3, size, size]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(low, size=size, mode="bilinear") * 255).round().to(torch.uint8)


def test_fd_of_identical_sets_is_zero_and_of_a_mean_shift_is_its_squared_norm():
    f = _features()
    assert abs(frechet_distance(f, f)) < 1e-6
    shift = torch.full((16,), 0.5)
    assert frechet_distance(f, f + shift) == pytest.approx(float(shift.square().sum()), rel=1e-4)


def test_fd_of_an_affine_copy_matches_the_gaussian_closed_form():
    # b = s a + t has mean s mu + t and covariance s^2 S, so FD = |(s - 1) mu + t|^2 + (1 - s)^2 tr(S).
    f = _features(n=200, d=8, seed=3)
    s, t = 1.5, torch.linspace(-1, 1, 8)
    stats = feature_statistics(f)
    expected = float(np.sum(((s - 1) * stats["mu"] + t.numpy()) ** 2) + (1 - s) ** 2 * np.trace(stats["sigma"]))
    assert frechet_distance(f, s * f + t) == pytest.approx(expected, rel=1e-4)
    assert expected > float(t.square().sum())   # The scale's covariance term is seen, not only the mean shift.


@pytest.mark.parametrize("n_a, n_b, d", [(40, 40, 64), (30, 50, 64), (120, 100, 16)])
def test_fd_from_features_equals_torch_fidelity_sqrtm_on_their_statistics(n_a, n_b, d):
    # Fewer samples than dimensions (rank-deficient covariances, as in the study) and more.
    a = _features(n=n_a, d=d, seed=4)
    b = 0.8 * _features(n=n_b, d=d, seed=5) + 0.2
    by_sqrtm = frechet_distance_stats(feature_statistics(a), feature_statistics(b))
    assert frechet_distance(a, b) == pytest.approx(by_sqrtm, rel=1e-5)


def test_fd_and_kid_on_tiny_images_through_enl0():
    images = _tiny_images()
    shifted = (images.int() + 60).clamp(0, 255).to(torch.uint8)
    same, other = extract_features(images, "enl0"), extract_features(shifted, "enl0")
    assert abs(frechet_distance(same, same)) < 1e-3
    assert frechet_distance(same, other) > 1.0
    kid_same = kernel_distance(same, same, subsets=10, subset_size=8, seed=0)
    kid_other = kernel_distance(same, other, subsets=10, subset_size=8, seed=0)
    assert kid_other["mean"] > kid_same["mean"] + 3 * kid_same["std"]


def test_kid_is_seeded_and_subset_size_is_capped():
    a, b = _features(seed=1), _features(seed=2) + 0.3
    one = kernel_distance(a, b, subsets=20, subset_size=1000, seed=7)
    assert one == kernel_distance(a, b, subsets=20, subset_size=64, seed=7)   # Capped at N = 64.
    assert one != kernel_distance(a, b, subsets=20, subset_size=32, seed=7)


def test_distribution_metrics_are_named_by_space():
    a, b = _features(seed=1), _features(seed=2)
    out = distribution_metrics(a, b, fd_key="fd_enl0", kid_key="kid_enl0", suffix="enl0", kid_subsets=5,
                               kid_subset_size=16, seed=0, with_precision_recall=True)
    assert set(out) == {"fd_enl0", "kid_enl0", "precision_enl0", "recall_enl0"}
    assert set(out["kid_enl0"]) == {"mean", "std"}
    assert out["fd_enl0"] == pytest.approx(frechet_distance(a, b))


def test_precision_recall_of_a_set_against_itself_and_a_far_away_set():
    a = _features(seed=1)
    kw = dict(fd_key="fd", kid_key="kid", suffix="x", kid_subsets=5, kid_subset_size=16, seed=0,
              with_precision_recall=True)
    same = distribution_metrics(a, a.clone(), **kw)
    assert same["precision_x"] == 1.0 and same["recall_x"] == 1.0
    far = distribution_metrics(a, _features(seed=2) + 100.0, **kw)   # k-NN radii are ~5; the sets are 400 apart.
    assert far["precision_x"] == 0.0 and far["recall_x"] == 0.0


def test_paired_fidelity_identical_sets_handle_infinite_psnr():
    images = _tiny_images(n=4)
    out = paired_fidelity(images, images)
    assert out["psnr_db"] is None and out["identical_images"] == 4
    assert out["ssim"] == pytest.approx(1.0) and out["mse"] == 0.0


def test_paired_fidelity_known_psnr():
    images = _tiny_images(n=4).clamp(0, 254)
    out = paired_fidelity(images + 1, images)   # Every pixel off by one level: MSE 1.
    assert out["psnr_db"] == pytest.approx(10 * math.log10(255**2), abs=1e-6)
    assert out["identical_images"] == 0 and out["ssim"] < 1.0
    mixed = images.clone()
    mixed[0] += 1
    part = paired_fidelity(mixed, images)
    assert part["identical_images"] == 3 and part["psnr_db"] == pytest.approx(10 * math.log10(255**2))


def test_statistics_file_round_trip(tmp_path):
    f = _features(n=100, d=8)
    stats = feature_statistics(f)
    np.savez(tmp_path / "stats.npz", mu=stats["mu"].astype(np.float32), sigma=stats["sigma"])   # clean-fid layout.
    assert abs(frechet_distance_stats(stats, load_statistics(tmp_path / "stats.npz"))) < 1e-4
    np.savez(tmp_path / "bad.npz", mean=stats["mu"])
    with pytest.raises(UserError, match="mu and sigma"):
        load_statistics(tmp_path / "bad.npz")
    with pytest.raises(UserError, match="not found"):
        load_statistics(tmp_path / "missing.npz")
