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

`build_reference` (stage eval_reference) generates the teacher's two sets once, with their features, for
`Reference.write`; `evaluate_variant` (stage evaluate@<variant>) reads that file through `Reference`, so no variant
regenerates the teacher. Both take loaded models (the pipeline loads the files).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..artifacts.evaluation import EvalInfo, EvalRecord, ReferenceMeta
from ..errors import UserError
from ..imaging import resize
from ..io.atomic import atomic_path
from ..io.download import sha256_of
from . import features as feat
from .fidelity import (distribution_metrics, feature_statistics, frechet_distance_stats, load_statistics,
                       paired_fidelity)
from .generation import generate_eval_images


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """The validated `eval` params section (edgestylegan.config holds every default and range)."""

    seed: int                   # First evaluation seed (seeds seed .. seed + num_samples - 1).
    reference_seed: int         # First seed of the teacher reference set (disjoint from the above).
    num_samples: int            # N, per set.
    truncation: float           # psi toward the teacher's w_avg; 1.0 = untruncated.
    resolution: int             # Evaluation resolution (area downsampling), capped at a variant's own.
    batch_size: int             # Generation batch.
    feature_batch_size: int     # Feature-extraction batch.
    runtime: str                # auto | openvino | torch (see generation.py, features.py).
    parity_tolerance: float     # Max |OpenVINO - PyTorch| on the first batch (images in [-1, 1]).
    feature_spaces: tuple       # Names in features.SPACES.
    inception_weights: str      # Local FID Inception weights (else torch hub cache, else download).
    # Read by evaluate@<variant> only; None in the config of stage eval_reference (`for_reference`), which must not
    # depend on them (a change of the KID subsets must not regenerate the teacher's reference sets).
    reference: str | None       # teacher | path to precomputed statistics (.npz with mu, sigma).
    kid_subsets: int | None
    kid_subset_size: int | None  # Capped at N.
    precision_recall: bool | None  # torch-fidelity precision / recall (k = 3) in every space.
    strip_columns: int | None   # Images in each variant's sample strip (the first seeds).

    @classmethod
    def from_params(cls, p: dict) -> "EvalConfig":
        """From the `eval` section as `config.load_params` returns it (every key present, validated)."""
        unknown = sorted(set(p) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"EvalConfig does not know eval keys {unknown}: add them to metrics.evaluate.EvalConfig")
        return cls(**{**p, "feature_spaces": tuple(p["feature_spaces"])})

    @classmethod
    def for_reference(cls, p: dict) -> "EvalConfig":
        """Stage eval_reference's config: only the REFERENCE_KEYS of the `eval` section are read."""
        rest = {f.name: None for f in dataclasses.fields(cls) if f.name not in REFERENCE_KEYS}
        read = {k: p[k] for k in REFERENCE_KEYS}
        return cls(**{**read, "feature_spaces": tuple(read["feature_spaces"])}, **rest)

    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.num_samples))

    def reference_seeds(self) -> list[int]:
        return list(range(self.reference_seed, self.reference_seed + self.num_samples))

    def spaces(self) -> list[feat.FeatureSpace]:
        return [feat.get_space(name) for name in self.feature_spaces]


REFERENCE_KEYS = ("seed", "reference_seed", "num_samples", "truncation", "resolution", "batch_size",
                  "feature_batch_size", "runtime", "parity_tolerance", "feature_spaces", "inception_weights")
"""The eval keys stage eval_reference reads (and stores in the reference file); evaluate@<variant> reads them all."""
MATCHED_KEYS = ("seed", "reference_seed", "num_samples", "truncation", "resolution")
"""Keys a variant's evaluation must share with the stored reference for its numbers to be comparable."""


def _features(images: torch.Tensor, cfg: EvalConfig) -> tuple[dict, float]:
    started = time.perf_counter()
    out = {s.name: feat.extract_features(images, s.name, cfg.feature_batch_size, cfg.inception_weights, cfg.runtime)
           for s in cfg.spaces()}
    return out, time.perf_counter() - started


def _feature_parity(cfg: EvalConfig) -> dict[str, dict]:
    return {s: feat.feature_parity(s, cfg.runtime, cfg.feature_batch_size).to_dict() for s in cfg.feature_spaces}


def _downsample_u8(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    chunks = [((resize(c.float() / 127.5 - 1, size) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
              for c in images.split(64)]
    return torch.cat(chunks)


def check_feature_assets(cfg: EvalConfig) -> None:
    """Fail on missing Inception weights before minutes of generation are spent."""
    if "inception" in cfg.feature_spaces:
        feat.resolve_inception_weights(cfg.inception_weights)


#----------------------------------------------------------------------------
# Reference set (stage eval_reference).


def build_reference(teacher, teacher_file: str | Path, cfg: EvalConfig) -> tuple[dict[str, np.ndarray],
                                                                                  ReferenceMeta]:
    """The teacher's evaluation and reference sets and their features, for `Reference.write`."""
    images, gen_info, gen_parity = generate_eval_images(teacher, {"main": cfg.seeds(), "ref": cfg.reference_seeds()},
                                                        cfg.truncation, cfg.resolution, cfg.batch_size, cfg.runtime,
                                                        cfg.parity_tolerance, desc="teacher")
    arrays = {"images_main": images["main"].numpy(), "images_ref": images["ref"].numpy()}
    feature_seconds = 0.0
    for part in ("main", "ref"):
        feats, seconds = _features(images[part], cfg)
        feature_seconds += seconds
        for name, f in feats.items():
            arrays[f"features_{name}_{part}"] = f.numpy()
    config = {k: getattr(cfg, k) for k in REFERENCE_KEYS}
    meta = ReferenceMeta(teacher=str(teacher_file), teacher_sha256=sha256_of(teacher_file),
                         resolution=int(images["main"].shape[-1]),
                         config={**config, "feature_spaces": list(cfg.feature_spaces)}, generation=gen_info,
                         generation_parity=gen_parity.to_dict(), feature_parity=_feature_parity(cfg),
                         feature_seconds=feature_seconds, feature_images_per_s=2 * cfg.num_samples / feature_seconds)
    return arrays, meta


class Reference:
    """The stored teacher sets; checks they were made with the protocol the caller is about to use."""

    def __init__(self, path: str | Path, cfg: EvalConfig):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"evaluation reference {path} not found; run `dvc repro eval_reference`")
        self.data = np.load(path)
        if "meta" not in self.data.files:
            raise UserError(f"{path} is not an evaluation reference (no meta entry); run `dvc repro eval_reference`")
        self.meta = ReferenceMeta.from_dict(json.loads(str(self.data["meta"])), str(path))
        made = self.meta.config
        for key in MATCHED_KEYS:
            if made[key] != getattr(cfg, key):
                raise UserError(f"{path} was made with eval.{key} = {made[key]!r}, params say {getattr(cfg, key)!r}; "
                                f"rerun `dvc repro eval_reference`")
        missing = [s for s in cfg.feature_spaces if f"features_{s}_ref" not in self.data]
        if missing:
            raise UserError(f"{path} has no features for {missing}; rerun `dvc repro eval_reference`")
        self.resolution = self.meta.resolution

    @staticmethod
    def write(path: str | Path, arrays: dict[str, np.ndarray], meta: ReferenceMeta) -> None:
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays, meta=np.array(json.dumps(meta.to_dict())))

    def images(self, part: str, size: int) -> torch.Tensor:
        return _downsample_u8(torch.from_numpy(self.data[f"images_{part}"]), size)

    def features(self, part: str, space: str) -> torch.Tensor:
        return torch.from_numpy(self.data[f"features_{space}_{part}"])


#----------------------------------------------------------------------------
# One variant (stage evaluate@<variant>).


def reference_statistics(cfg: EvalConfig):
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


def evaluate_variant(variant: str, model, model_file: str | Path, ref: Reference, statistics: tuple,
                     cfg: EvalConfig, load_seconds: float) -> tuple[EvalRecord, EvalInfo, torch.Tensor]:
    """One variant's metrics and info, and its sample strip (uint8). `statistics` is `reference_statistics(cfg)`;
    `load_seconds` the time the caller spent loading the reference and the model (reported)."""
    clock = {"start": time.perf_counter()}
    stats, stats_space = statistics
    size = min(cfg.resolution, model.resolution)
    if size > ref.resolution:
        raise UserError(f"reference images are {ref.resolution}^2 but {model_file} needs {size}^2")
    model_sha256 = sha256_of(model_file)
    is_teacher = size == ref.resolution and model_sha256 == ref.meta.teacher_sha256

    # 1. The variant's evaluation images (the teacher's are already in the reference file).
    if is_teacher:
        images = ref.images("main", size)
        gen_info = dict(ref.meta.generation["main"], note="teacher images reused from the reference file")
        gen_parity = ref.meta.generation_parity
    else:
        images, gen_info, parity = generate_eval_images(model, {"main": cfg.seeds()}, cfg.truncation, cfg.resolution,
                                                        cfg.batch_size, cfg.runtime, cfg.parity_tolerance,
                                                        desc=Path(model_file).name)
        images, gen_info, gen_parity = images["main"], gen_info["main"], parity.to_dict()
    teacher_main = ref.images("main", size)

    # 2. Features: the variant's, and the teacher's sets at this resolution (stored, or recomputed if smaller).
    if is_teacher:
        own = {s: ref.features("main", s) for s in cfg.feature_spaces}
        feature_seconds, feature_parity = 0.0, ref.meta.feature_parity
    else:
        own, feature_seconds = _features(images, cfg)
        feature_parity = _feature_parity(cfg)
    if size == ref.resolution:
        t_main = {s: ref.features("main", s) for s in cfg.feature_spaces}
        t_ref = {s: ref.features("ref", s) for s in cfg.feature_spaces}
    else:
        t_main, _ = _features(teacher_main, cfg)
        t_ref, _ = _features(ref.images("ref", size), cfg)

    clock["features"] = time.perf_counter()

    # 3. Metrics.
    scores: dict = {}
    floor: dict = {}
    for space in cfg.spaces():
        kw = dict(fd_key=space.fd_key, kid_key=space.kid_key, suffix=space.name, kid_subsets=cfg.kid_subsets,
                  kid_subset_size=cfg.kid_subset_size, seed=cfg.seed, with_precision_recall=cfg.precision_recall)
        scores.update(distribution_metrics(own[space.name], t_ref[space.name], **kw))
        floor.update(distribution_metrics(t_main[space.name], t_ref[space.name], **kw))
    info_stats = None
    if stats is not None:
        key = f"{stats_space.fd_key}_vs_stats"
        scores[key] = frechet_distance_stats(feature_statistics(own[stats_space.name]), stats)
        info_stats = {"path": cfg.reference, "sha256": sha256_of(cfg.reference), "space": stats_space.name,
                      "key": key}
    record = EvalRecord(n=cfg.num_samples, resolution=size, native_resolution=model.resolution, scores=scores,
                        noise_floor=floor, paired=paired_fidelity(images, teacher_main))
    clock["metrics"] = time.perf_counter()

    spaces = {s.name: {"label": s.label, "dim": s.dim, "fd_key": s.fd_key, "kid_key": s.kid_key}
              for s in cfg.spaces()}
    info = EvalInfo(
        variant=variant, model=str(model_file), model_sha256=model_sha256, is_teacher=is_teacher,
        seeds=f"{cfg.seed}..{cfg.seed + cfg.num_samples - 1}",
        reference=(f"teacher ({ref.meta.teacher}) on the disjoint seeds {cfg.reference_seed}.."
                   f"{cfg.reference_seed + cfg.num_samples - 1}, same N, same truncation {cfg.truncation}"),
        reference_stats=info_stats, truncation=cfg.truncation, feature_spaces=spaces,
        kid=f"{cfg.kid_subsets} subsets of {min(cfg.kid_subset_size, cfg.num_samples)}, cubic polynomial kernel",
        generation=gen_info, generation_parity=gen_parity, feature_parity=feature_parity,
        feature_seconds=feature_seconds,
        feature_images_per_s=(cfg.num_samples / feature_seconds) if feature_seconds else None,
        seconds={"load": load_seconds, "generate_and_features": clock["features"] - clock["start"],
                 "metrics": clock["metrics"] - clock["features"]},
        inception_weights=("used" if "inception" in cfg.feature_spaces
                           else feat.inception_weights_status(cfg.inception_weights)),
    )
    return record, info, images[: cfg.strip_columns]
