"""The evaluation protocol: fixed latents, a teacher reference set, distribution and paired metrics per variant.

Protocol (study-design.md section 6):
* Evaluation latents: seeds `eval.seed` .. `eval.seed + N - 1`, one z per seed, shared by every variant, fixed
  noise maps, truncation `eval.truncation` (1.0 = untruncated, as FID is usually reported).
* Reference set: the teacher's images for the disjoint seeds `eval.reference_seed` .. + N - 1. Each variant's
  FD / KID / precision-recall is measured against it; the teacher's own evaluation images against it give the
  noise floor, the value a perfect copy of the teacher would get at this N.
* Paired fidelity: each variant image against the teacher image of the same latent (PSNR, SSIM).
* Everything is measured at the evaluation resolution r = min(`eval.resolution`, the variant's native size):
  images are area-downsampled once; the feature extractors then resize to their own input size.

`build_reference` (stage eval_reference) generates the teacher's two sets once and stores them with their
features; `evaluate_variant` (stage evaluate@<variant>) reads that file, so no variant regenerates the teacher.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..imaging import resize
from ..io.atomic import atomic_path
from ..pipeline.loaders import load_model
from . import features as feat
from .fidelity import (distribution_metrics, feature_statistics, frechet_distance_stats, load_statistics,
                       paired_fidelity)
from .generation import generate_eval_images

REFERENCE_FORMAT = "edgestylegan.eval-reference.v1"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    seed: int = 100_000                   # First evaluation seed (seeds seed .. seed + num_samples - 1).
    reference_seed: int = 200_000         # First seed of the teacher reference set (disjoint from the above).
    num_samples: int = 256                # N, per set.
    truncation: float = 1.0               # psi toward the teacher's w_avg; 1.0 = untruncated.
    resolution: int = 256                 # Evaluation resolution (area downsampling), capped at a variant's own.
    batch_size: int = 4                   # Generation batch.
    feature_batch_size: int = 32          # Feature-extraction batch.
    runtime: str = "auto"                 # auto | openvino | torch (see generation.py).
    parity_tolerance: float = 2e-3        # Max |OpenVINO - PyTorch| on the first batch (images in [-1, 1]).
    feature_spaces: tuple = ("enl0",)     # Names in features.SPACES.
    inception_weights: str = ""           # Local FID Inception weights (else torch hub cache, else download).
    reference: str = "teacher"            # teacher | path to precomputed statistics (.npz with mu, sigma).
    kid_subsets: int = 100
    kid_subset_size: int = 128            # Capped at N.
    precision_recall: bool = True         # torch-fidelity precision / recall (k = 3) in every space.
    strip_columns: int = 8                # Images in each variant's sample strip (the first seeds).

    @classmethod
    def from_params(cls, p: dict) -> "EvalConfig":
        p = dict(p)
        p["feature_spaces"] = tuple(p["feature_spaces"])
        return cls(**p)

    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.num_samples))

    def reference_seeds(self) -> list[int]:
        return list(range(self.reference_seed, self.reference_seed + self.num_samples))

    def spaces(self) -> list[feat.FeatureSpace]:
        return [feat.get_space(name) for name in self.feature_spaces]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _features(images: torch.Tensor, cfg: EvalConfig) -> tuple[dict, float]:
    started = time.perf_counter()
    runtime = "torch" if cfg.runtime == "torch" else "openvino"
    out = {s.name: feat.extract_features(images, s.name, cfg.feature_batch_size, cfg.inception_weights, runtime)
           for s in cfg.spaces()}
    return out, time.perf_counter() - started


def _feature_runtimes(cfg: EvalConfig) -> dict:
    runtime = "torch" if cfg.runtime == "torch" else "openvino"
    weights = lambda s: str(feat.resolve_inception_weights(cfg.inception_weights)) if s == "inception" else None
    return {s: getattr(feat.get_extractor(s, weights(s), runtime, cfg.feature_batch_size), "runtime", "pytorch")
            for s in cfg.feature_spaces}


def _downsample_u8(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    chunks = [((resize(c.float() / 127.5 - 1, size) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
              for c in images.split(64)]
    return torch.cat(chunks)


#----------------------------------------------------------------------------
# Reference set (stage eval_reference).


def build_reference(teacher_path: str | Path, cfg: EvalConfig, out_path: str | Path) -> dict:
    """Generate the teacher's evaluation and reference sets, extract their features, write one .npz."""
    if set(cfg.seeds()) & set(cfg.reference_seeds()):
        raise UserError("eval.seed and eval.reference_seed ranges overlap; the noise floor needs disjoint seeds")
    for space in cfg.spaces():   # Fail before spending minutes on generation.
        if space.name == "inception":
            feat.resolve_inception_weights(cfg.inception_weights)
    teacher = load_model(teacher_path)
    images, gen_info = generate_eval_images(teacher, {"main": cfg.seeds(), "ref": cfg.reference_seeds()},
                                            cfg.truncation, cfg.resolution, cfg.batch_size, cfg.runtime,
                                            cfg.parity_tolerance, desc="teacher")
    arrays = {"images_main": images["main"].numpy(), "images_ref": images["ref"].numpy()}
    feature_seconds = 0.0
    for part in ("main", "ref"):
        feats, seconds = _features(images[part], cfg)
        feature_seconds += seconds
        for name, f in feats.items():
            arrays[f"features_{name}_{part}"] = f.numpy()
    meta = {"format": REFERENCE_FORMAT, "teacher": str(teacher_path), "teacher_sha256": sha256_file(teacher_path),
            "resolution": int(images["main"].shape[-1]), "config": dataclasses.asdict(cfg),
            "generation": gen_info, "feature_seconds": feature_seconds, "feature_runtime": _feature_runtimes(cfg),
            "feature_images_per_s": 2 * cfg.num_samples / feature_seconds}
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_path(out_path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return meta


class Reference:
    """The stored teacher sets; checks they were made with the protocol the caller is about to use."""

    def __init__(self, path: str | Path, cfg: EvalConfig):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"evaluation reference {path} not found; run `dvc repro eval_reference`")
        self.data = np.load(path)
        self.meta = json.loads(str(self.data["meta"]))
        if self.meta.get("format") != REFERENCE_FORMAT:
            raise UserError(f"{path} is not an evaluation reference ({self.meta.get('format')!r})")
        made = self.meta["config"]
        for key in ("seed", "reference_seed", "num_samples", "truncation", "resolution"):
            if made[key] != getattr(cfg, key):
                raise UserError(f"{path} was made with eval.{key} = {made[key]!r}, params say {getattr(cfg, key)!r}; "
                                f"rerun `dvc repro eval_reference`")
        missing = [s for s in cfg.feature_spaces if f"features_{s}_ref" not in self.data]
        if missing:
            raise UserError(f"{path} has no features for {missing}; rerun `dvc repro eval_reference`")
        self.resolution = int(self.meta["resolution"])

    def images(self, part: str, size: int) -> torch.Tensor:
        return _downsample_u8(torch.from_numpy(self.data[f"images_{part}"]), size)

    def features(self, part: str, space: str) -> torch.Tensor:
        return torch.from_numpy(self.data[f"features_{space}_{part}"])


#----------------------------------------------------------------------------
# One variant (stage evaluate@<variant>).


def _reference_statistics(cfg: EvalConfig):
    """(statistics, feature space) of `eval.reference` when it is a statistics file, else (None, None)."""
    if cfg.reference == "teacher":
        return None, None
    stats = load_statistics(cfg.reference)
    dim = stats["mu"].shape[0]
    matching = [s for s in cfg.spaces() if s.dim == dim]
    if not matching:
        raise UserError(f"eval.reference {cfg.reference!r} holds {dim}-d statistics but no requested feature "
                        f"space has {dim} dimensions ({', '.join(f'{s.name}: {s.dim}' for s in cfg.spaces())}); "
                        f"add `inception` to eval.feature_spaces for 2048-d (clean-fid) statistics")
    return stats, matching[0]


def evaluate_variant(model_path: str | Path, reference_path: str | Path,
                     cfg: EvalConfig) -> tuple[dict, dict, torch.Tensor]:
    """Return (metrics: nested dict of numbers, info: strings and timings for the report, sample strip uint8)."""
    clock = {"start": time.perf_counter()}
    ref = Reference(reference_path, cfg)
    stats, stats_space = _reference_statistics(cfg)   # Checked before minutes of generation.
    model = load_model(model_path)
    size = min(cfg.resolution, model.resolution)
    if size > ref.resolution:
        raise UserError(f"reference images are {ref.resolution}^2 but {model_path} needs {size}^2")
    is_teacher = size == ref.resolution and sha256_file(model_path) == ref.meta["teacher_sha256"]

    clock["loaded"] = time.perf_counter()

    # 1. The variant's evaluation images (the teacher's are already in the reference file).
    if is_teacher:
        images = ref.images("main", size)
        gen_info = dict(ref.meta["generation"]["main"], note="teacher images reused from the reference file")
    else:
        images, gen_info = generate_eval_images(model, {"main": cfg.seeds()}, cfg.truncation, cfg.resolution,
                                                cfg.batch_size, cfg.runtime, cfg.parity_tolerance,
                                                desc=Path(model_path).name)
        images, gen_info = images["main"], gen_info["main"]
    teacher_main = ref.images("main", size)

    # 2. Features: the variant's, and the teacher's sets at this resolution (stored, or recomputed if smaller).
    if is_teacher:
        own = {s: ref.features("main", s) for s in cfg.feature_spaces}
        feature_seconds = 0.0
    else:
        own, feature_seconds = _features(images, cfg)
    if size == ref.resolution:
        t_main = {s: ref.features("main", s) for s in cfg.feature_spaces}
        t_ref = {s: ref.features("ref", s) for s in cfg.feature_spaces}
    else:
        t_main, _ = _features(teacher_main, cfg)
        t_ref, _ = _features(ref.images("ref", size), cfg)

    clock["features"] = time.perf_counter()

    # 3. Metrics.
    metrics: dict = {"n": cfg.num_samples, "resolution": size, "native_resolution": model.resolution}
    floor: dict = {}
    for space in cfg.spaces():
        kw = dict(fd_key=space.fd_key, kid_key=space.kid_key, suffix=space.name, kid_subsets=cfg.kid_subsets,
                  kid_subset_size=cfg.kid_subset_size, seed=cfg.seed, with_precision_recall=cfg.precision_recall)
        metrics.update(distribution_metrics(own[space.name], t_ref[space.name], **kw))
        floor.update(distribution_metrics(t_main[space.name], t_ref[space.name], **kw))
    metrics["noise_floor"] = floor
    info_stats = None
    if stats is not None:
        metrics[f"{stats_space.fd_key}_vs_stats"] = frechet_distance_stats(feature_statistics(own[stats_space.name]),
                                                                            stats)
        info_stats = {"path": cfg.reference, "sha256": sha256_file(cfg.reference), "space": stats_space.name,
                      "key": f"{stats_space.fd_key}_vs_stats"}
    metrics["paired"] = paired_fidelity(images, teacher_main)
    clock["metrics"] = time.perf_counter()

    spaces = {s.name: {"label": s.label, "dim": s.dim, "fd_key": s.fd_key, "kid_key": s.kid_key}
              for s in cfg.spaces()}
    info = {
        "model": str(model_path), "model_sha256": sha256_file(model_path), "is_teacher": is_teacher,
        "n": cfg.num_samples, "resolution": size, "native_resolution": model.resolution,
        "seeds": f"{cfg.seed}..{cfg.seed + cfg.num_samples - 1}",
        "reference": (f"teacher ({ref.meta['teacher']}) on the disjoint seeds {cfg.reference_seed}.."
                      f"{cfg.reference_seed + cfg.num_samples - 1}, same N, same truncation {cfg.truncation}"),
        "reference_stats": info_stats, "truncation": cfg.truncation, "feature_spaces": spaces,
        "kid": f"{cfg.kid_subsets} subsets of {min(cfg.kid_subset_size, cfg.num_samples)}, cubic polynomial kernel",
        "generation": gen_info, "feature_seconds": feature_seconds, "feature_runtime": _feature_runtimes(cfg),
        "feature_images_per_s": (cfg.num_samples / feature_seconds) if feature_seconds else None,
        "seconds": {"load": clock["loaded"] - clock["start"],
                    "generate_and_features": clock["features"] - clock["loaded"],
                    "metrics": clock["metrics"] - clock["features"]},
        "inception_weights": feat.inception_weights_status(cfg.inception_weights)
        if "inception" not in cfg.feature_spaces else "used",
    }
    return metrics, info, images[: cfg.strip_columns]
