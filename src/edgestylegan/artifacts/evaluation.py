"""The evaluation's artifacts: stage eval_reference's reference sets, and per variant (stage evaluate@<variant>,
evaluate_pruned@<amount>) metrics/eval/<variant>.json (numbers) and reports/eval/<variant>.json (protocol, timings,
runtimes).

Score keys carry their feature space (`metrics.features.SPACES`) and, for FID, the reference: "fd_enl0",
"kid_enl0", "precision_enl0", "recall_enl0" in EfficientNet-Lite0 space; "fid_vs_teacher", "kid_vs_teacher",
"precision_inception", "recall_inception" in the FID Inception-v3 space, against the teacher's own samples;
"fd_enl0_vs_stats" / "fid_vs_stats" against a statistics file (eval.reference). FD is a float, KID a {"mean", "std"}
dict, precision / recall floats in [0, 1] (present when eval.precision_recall).

A parity record (`runtimes.parity.ParityRecord.to_dict()`) says which runtime produced a set of numbers: {"what",
"requested" (the eval.runtime value), "runtime" (in use after the check), "max_abs" (candidate vs PyTorch on the
probe; null when nothing was compared), "tolerance", "fallback_reason" (set when eval.runtime = auto fell back to
PyTorch; null otherwise)}. Records hold strings, so they live in the reports/eval/ info, not in metrics/.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from .base import Artifact


@dataclasses.dataclass
class ReferenceMeta(Artifact):
    """The JSON `meta` entry of data/eval/reference.npz (arrays: features_<space>_<main|ref> float32 [N, dim] and
    images_paired uint8 [P, 3, r, r], the teacher's images of the first P = eval.paired_samples evaluation seeds);
    read by every evaluate stage through `metrics.evaluate.Reference`. Version 2: the full image sets are no longer
    stored."""

    VERSION: ClassVar[int] = 2
    PRODUCER: ClassVar[str] = "eval_reference"

    teacher: str
    """The teacher file the sets were generated from (as given to the stage)."""

    teacher_sha256: str
    """Its sha256: a variant with the same file is the teacher and reuses the stored sets."""

    resolution: int
    """r: min(eval.resolution, the teacher's native size)."""

    config: dict
    """The eval params the sets were made with: exactly the keys eval_reference reads
    (`metrics.evaluate.REFERENCE_KEYS`)."""

    generation: dict[str, dict]
    """Per set ("main": seeds eval.seed.., "ref": seeds eval.reference_seed..): "seconds", "images_per_s" (wall time,
    the first set's including the runtime conversion and the parity batch), "convert_seconds" (when converted),
    "batch_size", "resolution", "native_resolution"."""

    generation_parity: dict
    """Parity record of the runtime that generated both sets."""

    feature_parity: dict[str, dict]
    """Feature space -> parity record of the runtime that extracted its features."""

    feature_seconds: float
    """Wall time of feature extraction over both sets and every space."""

    feature_images_per_s: float
    """2 N / feature_seconds (every space together)."""

    inception: dict | None
    """With `inception` in eval.feature_spaces, what was verified about its weights
    (`metrics.features.inception_checks`): "source", "sha256", "torchscript_max_abs", "tolerance", "checks"; null otherwise."""


@dataclasses.dataclass
class EvalRecord(Artifact):
    """metrics/eval/<variant>.json: one variant's quality against the teacher reference set."""

    PRODUCER: ClassVar[str] = "evaluate"
    FLATTEN: ClassVar[str] = "scores"

    n: int
    """N: images per set (eval.num_samples)."""

    resolution: int
    """Evaluation resolution: min(eval.resolution, native_resolution)."""

    native_resolution: int
    """The variant's own output size."""

    scores: dict
    """Written at the top level: the variant's images vs the teacher reference set, per feature space (keys above).
    With eval.reference = a statistics file, also "<fd key>_vs_stats": the Frechet distance to those statistics."""

    noise_floor: dict
    """The same scores (without _vs_stats) for the teacher's own evaluation images vs the reference set, at this
    variant's resolution: what a perfect copy of the teacher gets at this N."""

    paired: dict
    """Each image vs the teacher's image of the same latent, averaged over the first "n" (eval.paired_samples)
    evaluation seeds: "ssim", "mse" (uint8 levels squared), "identical_images" (count), "psnr_db" (mean over the
    images that differ; null when every image is identical)."""


@dataclasses.dataclass
class EvalInfo(Artifact):
    """reports/eval/<variant>.json: how metrics/eval/<variant>.json was measured (for the report; strings allowed).
    Version 2: feature spaces name their resize and statistics key; `paired` and `inception` added."""

    VERSION: ClassVar[int] = 2
    PRODUCER: ClassVar[str] = "evaluate"

    variant: str
    """Variant id: teacher | pruned-<amount> | int8 | student | student-int8."""

    model: str
    """The model file evaluated (derived from the variant id by the stage)."""

    model_sha256: str

    is_teacher: bool
    """The file is the reference's teacher at the reference resolution: its images and features were reused."""

    seeds: str
    """"first..last" evaluation seeds."""

    reference: str
    """One line naming the reference set (teacher file, seeds, N, truncation)."""

    reference_stats: dict | None
    """eval.reference = a statistics file: {"path", "sha256", "space", "key"}; null for eval.reference = teacher."""

    truncation: float

    feature_spaces: dict[str, dict]
    """Space name -> {"label", "dim", "fd_key", "kid_key", "stats_key", "resize"}."""

    kid: str
    """One line: KID subsets, subset size and kernel."""

    paired: str
    """One line: which seeds PSNR / SSIM were averaged over."""

    generation: dict
    """Timings of the variant's evaluation images: "seconds", "images_per_s", "convert_seconds" (when converted),
    "batch_size", "resolution", "native_resolution"; for the teacher the reference's "main" entry plus "note"."""

    generation_parity: dict
    """Parity record of the runtime that generated the images (the reference's for the teacher)."""

    feature_parity: dict[str, dict]
    """Feature space -> parity record of the runtime that extracted the features."""

    feature_seconds: float
    """Feature extraction wall time in this stage (0 for the teacher: features reused)."""

    feature_images_per_s: float | None
    """N / feature_seconds; null when nothing was extracted here."""

    seconds: dict[str, float]
    """Stage wall time: "load", "generate_and_features", "metrics"."""

    inception_weights: str
    """"used" when `inception` is a feature space, else where the weights are or how to supply them."""

    inception: dict | None
    """The reference's `ReferenceMeta.inception` (what was verified about the Inception weights) when `inception` is
    a feature space; null otherwise."""
