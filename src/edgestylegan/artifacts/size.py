"""metrics/size/<variant>.json, written by stage account@<variant>: what one variant stores and what it costs.

Variants: teacher | pruned-<amount> | int8 | student | student-int8 (`paths.size_metrics(variant)`). Each record is
measured in its own run from the variant's files, so only comparisons inside one record (a latency and its
`reference_latency_ms`) are within one measurement; latencies of two records come from two runs.

Counts are from the tensors (`metrics.accounting.parameter_counts`: "synthesis" and "generator" scopes, each
{"params", "nonzero", "sparsity", "buffers"}); for int8 and student-int8 they are those of the float model that was
quantized (the operating point prune.amount, or the student), since the int8 files store the same weights rounded.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from .base import Artifact


@dataclasses.dataclass
class SizeRecord(Artifact):
    PRODUCER: ClassVar[str] = "account"

    params: dict[str, dict[str, float]]
    """Parameter counts of the variant's float tensors per scope (see the module docstring)."""

    bytes: dict[str, dict[str, int] | None]
    """"file": {"bytes", "gzip_bytes"} of the variant's deployable file (teacher / student: the dense checkpoint;
    pruned: the sparse checkpoint; int8 / student-int8: the quantize.engine file, `paths.int8_model`);
    "dense_fp32": the same for the dense fp32 checkpoint of its float tensors, serialised in memory (null when the
    deployable file is that dense checkpoint). gzip at level 6."""

    stored_elements: dict[str, int]
    """Elements per stored dtype in the deployable file (safetensors or ONNX initializers)."""

    macs: dict[str, float | dict[str, float]]
    """`metrics.accounting.mac_summary` of the variant's configuration: "gmac", "gmac_conv",
    "gmac_modulation_linear", "gmac_mapping", "elementwise_gops", "gflops_2mac_plus_elementwise", and "all_heads"
    (the same net with every training head: upstream's parameter set)."""

    latency_ms: dict[str, float]
    """Median per runtime (torch_fp32, onnxruntime_fp32, openvino_fp32, openvino_ir_fp32,
    onnxruntime_int8, openvino_int8) of the variant's own model; only runtimes in account.runtimes."""

    latency_min_ms: dict[str, float]
    """Fastest call per runtime, same keys."""

    reference_latency_ms: dict[str, float]
    """Medians of the fp32 reference timed in the same interleaved run: for int8 / student-int8 the float.onnx of the
    same quantize stage (onnxruntime_fp32, openvino_fp32) and the float model in PyTorch (torch_fp32); for
    pruned-<amount> the dense base model prune.base (torch_fp32); {} for the teacher and the student."""

    reference_latency_min_ms: dict[str, float]

    latency_over_fp32_same_runtime: dict[str, float]
    """Runtime family ("torch", "onnxruntime", "openvino") -> latency_ms / reference_latency_ms on that family:
    int8 over fp32, or pruned over dense, within this record's run."""

    latency_setup: dict
    """"threads" (account.threads), "repeats" (account.latency_repeats), "warmup" (account.latency_warmup), "batch"
    (1), "resolution" (output px), "cpu": {"model_name", "isa": {flag: true} for the avx2 / avx512f / avx512_vnni /
    avx_vnni / amx_* flags the CPU reports}."""

    earlier_study_counting: dict | None = None
    """Teacher only: `metrics.accounting.earlier_study_counting` of the synthesis net, {"synthesis": {...}}."""

    earlier_study_reproduction: dict | None = None
    """Teacher only: `metrics.accounting.earlier_study_reproduction` (the earlier study's int8 counting re-run on the
    upstream parameter set of this teacher)."""
