"""The evaluation protocol: fixed latents, a teacher reference set, distribution and paired metrics per variant.

Protocol (study-design.md section 6):
* Evaluation latents: seeds `eval.seed` .. `eval.seed + N - 1`, one z per seed, shared by every variant, fixed
  noise maps, truncation `eval.truncation` (1.0 = untruncated, as FID is usually reported).
* Reference set: the teacher's images for the disjoint seeds `eval.reference_seed` .. + N - 1. Each variant's
  FD / KID / precision-recall is measured against it; the teacher's own evaluation images against it give the
  noise floor, the value a perfect copy of the teacher would get at this N.
* Paired fidelity: each variant image against the teacher image of the same latent (PSNR, SSIM), on the first
  `eval.paired_samples` evaluation seeds (the teacher's images of those seeds are stored once in the reference).
* Streaming: images are generated batch by batch straight into the feature extractors (`features.FeatureStream`);
  only features and the paired subset's images are kept, so memory does not grow with N beyond the features.
* Everything is measured at the evaluation resolution r = min(`eval.resolution`, the variant's native size):
  images are area-downsampled once; the feature extractors then resize to their own input size.

`build_reference` (stage eval_reference) generates the teacher's two sets once and keeps their features (and the
paired subset's images) for `Reference.write`; `evaluate_variant` (stage evaluate@<variant>) reads that file through
`Reference`, so no variant
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
from ..io.atomic import atomic_path
from ..io.download import sha256_of
from . import features as feat
from .fidelity import (distribution_metrics, feature_statistics, frechet_distance_stats, load_statistics,
                       paired_fidelity)
from .generation import downsample_u8, stream_eval_images


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
    paired_samples: int         # First evaluation seeds whose teacher images are stored for PSNR / SSIM.
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
                  "feature_batch_size", "runtime", "parity_tolerance", "feature_spaces", "inception_weights",
                  "paired_samples")
"""The eval keys stage eval_reference reads (and stores in the reference file); evaluate@<variant> reads them all."""
MATCHED_KEYS = ("seed", "reference_seed", "num_samples", "truncation", "resolution", "paired_samples")
"""Keys a variant's evaluation must share with the stored reference for its numbers to be comparable."""


def _stream(cfg: EvalConfig) -> feat.FeatureStream:
    return feat.FeatureStream(cfg.feature_spaces, cfg.feature_batch_size, cfg.inception_weights, cfg.runtime)


def _feature_parity(cfg: EvalConfig) -> dict[str, dict]:
    return {s: feat.feature_parity(s, cfg.runtime, cfg.feature_batch_size, cfg.inception_weights).to_dict()
            for s in cfg.feature_spaces}


class _FirstImages:
    """Keeps the first `count` images of a stream (the paired subset and the sample strip)."""

    def __init__(self, count: int):
        self.count, self.chunks, self.held = count, [], 0

    def add(self, images: torch.Tensor) -> None:
        if self.held < self.count:
            self.chunks.append(images[: self.count - self.held].clone())
            self.held += len(self.chunks[-1])

    def images(self) -> torch.Tensor:
        return torch.cat(self.chunks)


def check_feature_assets(cfg: EvalConfig) -> None:
    """Fail on missing or damaged Inception weights before minutes of generation are spent."""
    if "inception" in cfg.feature_spaces:
        feat.resolve_inception_weights(cfg.inception_weights)


#----------------------------------------------------------------------------
# Reference set (stage eval_reference).


def build_reference(teacher, teacher_file: str | Path, cfg: EvalConfig) -> tuple[dict[str, np.ndarray],
                                                                                  ReferenceMeta]:
    """Features of the teacher's evaluation and reference sets, streamed from generation, and the teacher's images of
    the first eval.paired_samples evaluation seeds, for `Reference.write`."""
    streams = {"main": _stream(cfg), "ref": _stream(cfg)}
    paired = _FirstImages(cfg.paired_samples)

    def sink(part: str, images: torch.Tensor) -> None:
        streams[part].add(images)
        if part == "main":
            paired.add(images)

    gen_info, gen_parity = stream_eval_images(teacher, {"main": cfg.seeds(), "ref": cfg.reference_seeds()},
                                              cfg.truncation, cfg.resolution, cfg.batch_size, cfg.runtime,
                                              cfg.parity_tolerance, sink, desc="teacher")
    arrays = {"images_paired": paired.images().numpy()}
    for part, stream in streams.items():
        for name, f in stream.finish().items():
            arrays[f"features_{name}_{part}"] = f.numpy()
    feature_seconds = sum(s.seconds for s in streams.values())
    config = {k: getattr(cfg, k) for k in REFERENCE_KEYS}
    meta = ReferenceMeta(teacher=str(teacher_file), teacher_sha256=sha256_of(teacher_file),
                         resolution=int(arrays["images_paired"].shape[-1]),
                         config={**config, "feature_spaces": list(cfg.feature_spaces)}, generation=gen_info,
                         generation_parity=gen_parity.to_dict(), feature_parity=_feature_parity(cfg),
                         feature_seconds=feature_seconds, feature_images_per_s=2 * cfg.num_samples / feature_seconds,
                         inception=(feat.inception_checks(cfg.inception_weights)
                                    if "inception" in cfg.feature_spaces else None))
    return arrays, meta


class Reference:
    """The stored teacher features and paired images; checks they were made with the protocol the caller is about to
    use."""

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

    def paired_images(self, size: int) -> torch.Tensor:
        """The teacher's images of the first eval.paired_samples evaluation seeds, at `size` (uint8)."""
        return downsample_u8(torch.from_numpy(self.data["images_paired"]), size)

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


def _teacher_at(size: int, load_teacher, ref: Reference, cfg: EvalConfig) -> tuple[dict, dict]:
    """The teacher's two sets regenerated (streamed) at the reference resolution, area-downsampled to `size` and
    featurised: the floor of a variant smaller than the reference. `load_teacher()` -> (model, file)."""
    teacher, teacher_file = load_teacher()
    if sha256_of(teacher_file) != ref.meta.teacher_sha256:
        raise UserError(f"{teacher_file} is not the teacher data/eval/reference.npz was made from "
                        f"(sha256 differs); rerun `dvc repro eval_reference`")
    streams = {"main": _stream(cfg), "ref": _stream(cfg)}
    stream_eval_images(teacher, {"main": cfg.seeds(), "ref": cfg.reference_seeds()}, cfg.truncation, cfg.resolution,
                       cfg.batch_size, cfg.runtime, cfg.parity_tolerance,
                       lambda part, images: streams[part].add(images), desc=f"teacher at {size}px",
                       downsample_to=size)
    return streams["main"].finish(), streams["ref"].finish()


def evaluate_variant(variant: str, model, model_file: str | Path, ref: Reference, statistics: tuple,
                     cfg: EvalConfig, load_seconds: float, load_teacher=None) -> tuple[EvalRecord, EvalInfo,
                                                                                      torch.Tensor]:
    """One variant's metrics and info, and its sample strip (uint8). `statistics` is `reference_statistics(cfg)`;
    `load_seconds` the time the caller spent loading the reference and the model (reported); `load_teacher()` ->
    (teacher model, its file), called only for a variant smaller than the reference resolution.

    The variant's images are streamed into the feature extractors; only its features and its first
    eval.paired_samples images (for PSNR / SSIM against the stored teacher images) are kept."""
    clock = {"start": time.perf_counter()}
    stats, stats_space = statistics
    size = min(cfg.resolution, model.resolution)
    if size > ref.resolution:
        raise UserError(f"reference images are {ref.resolution}^2 but {model_file} needs {size}^2")
    model_sha256 = sha256_of(model_file)
    is_teacher = size == ref.resolution and model_sha256 == ref.meta.teacher_sha256
    teacher_paired = ref.paired_images(size)

    # 1. The variant's features and paired images (the teacher's are in the reference file).
    if is_teacher:
        own = {s: ref.features("main", s) for s in cfg.feature_spaces}
        images = teacher_paired
        gen_info = dict(ref.meta.generation["main"], note="teacher features and images reused from the reference file")
        gen_parity, feature_seconds, feature_parity = ref.meta.generation_parity, 0.0, ref.meta.feature_parity
    else:
        stream, head = _stream(cfg), _FirstImages(cfg.paired_samples)

        def sink(_, batch: torch.Tensor) -> None:
            stream.add(batch)
            head.add(batch)

        gen_infos, parity = stream_eval_images(model, {"main": cfg.seeds()}, cfg.truncation, cfg.resolution,
                                               cfg.batch_size, cfg.runtime, cfg.parity_tolerance, sink,
                                               desc=Path(model_file).name)
        own, images = stream.finish(), head.images()
        gen_info, gen_parity = gen_infos["main"], parity.to_dict()
        feature_seconds, feature_parity = stream.seconds, _feature_parity(cfg)

    # 2. The teacher's features at this resolution: stored, or regenerated for a smaller variant.
    if size == ref.resolution:
        t_main = {s: ref.features("main", s) for s in cfg.feature_spaces}
        t_ref = {s: ref.features("ref", s) for s in cfg.feature_spaces}
    else:
        if load_teacher is None:
            raise ValueError("a variant smaller than the reference needs load_teacher")
        t_main, t_ref = _teacher_at(size, load_teacher, ref, cfg)
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
        scores[stats_space.stats_key] = frechet_distance_stats(feature_statistics(own[stats_space.name]), stats)
        info_stats = {"path": cfg.reference, "sha256": sha256_of(cfg.reference), "space": stats_space.name,
                      "key": stats_space.stats_key}
    paired = dict(paired_fidelity(images, teacher_paired), n=len(images))
    record = EvalRecord(n=cfg.num_samples, resolution=size, native_resolution=model.resolution, scores=scores,
                        noise_floor=floor, paired=paired)
    clock["metrics"] = time.perf_counter()

    spaces = {s.name: {"label": s.label, "dim": s.dim, "fd_key": s.fd_key, "kid_key": s.kid_key,
                       "stats_key": s.stats_key, "resize": s.resize} for s in cfg.spaces()}
    info = EvalInfo(
        variant=variant, model=str(model_file), model_sha256=model_sha256, is_teacher=is_teacher,
        seeds=f"{cfg.seed}..{cfg.seed + cfg.num_samples - 1}",
        reference=(f"teacher ({ref.meta.teacher}) on the disjoint seeds {cfg.reference_seed}.."
                   f"{cfg.reference_seed + cfg.num_samples - 1}, same N, same truncation {cfg.truncation}"),
        reference_stats=info_stats, truncation=cfg.truncation, feature_spaces=spaces,
        kid=f"{cfg.kid_subsets} subsets of {min(cfg.kid_subset_size, cfg.num_samples)}, cubic polynomial kernel",
        paired=(f"the first {len(images)} evaluation seeds ({cfg.seed}..{cfg.seed + len(images) - 1}) against the "
                f"teacher's stored images of the same seeds"),
        generation=gen_info, generation_parity=gen_parity, feature_parity=feature_parity,
        feature_seconds=feature_seconds,
        feature_images_per_s=(cfg.num_samples / feature_seconds) if feature_seconds else None,
        seconds={"load": load_seconds, "generate_and_features": clock["features"] - clock["start"],
                 "metrics": clock["metrics"] - clock["features"]},
        inception_weights=("used" if "inception" in cfg.feature_spaces
                           else feat.inception_weights_status(cfg.inception_weights)),
        inception=ref.meta.inception if "inception" in cfg.feature_spaces else None,
    )
    return record, info, images[: cfg.strip_columns]
