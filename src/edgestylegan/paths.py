"""Where every artifact of the study lives: the one module that knows the pipeline's file layout.

Stages, pipeline functions, the report and the tests ask a `Paths` (rooted at the project, or at a test's temp
folder) instead of building file names. `dvc.yaml` spells the same layout with DVC's templating; `amount_tag` is
the text DVC's `${item}` gives for a params.yaml float (0.2 -> "0.2"), so both agree on file names.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

VARIANT_KINDS = ("teacher", "pruned", "int8", "student", "student-int8")


def amount_tag(amount: float) -> str:
    return str(float(amount))


def pruned_variant(amount: float) -> str:
    return f"pruned-{amount_tag(amount)}"


@dataclasses.dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # ---- models
    def base_model(self, base: str) -> Path:
        """models/<teacher|student>.safetensors (prune.base)."""
        return self.root / "models" / f"{base}.safetensors"

    @property
    def teacher_model(self) -> Path: return self.base_model("teacher")
    @property
    def student_model(self) -> Path: return self.base_model("student")
    def pruned_model(self, amount: float) -> Path: return self.root / "models" / "pruned" / f"{amount_tag(amount)}.safetensors"

    def quantized_dir(self, source: str = "operating_point") -> Path:
        """models/quantized (stage quantize) or models/quantized_student (stage quantize_student)."""
        return self.root / "models" / ("quantized_student" if source == "student" else "quantized")

    def float_onnx(self, source: str = "operating_point") -> Path: return self.quantized_dir(source) / "float.onnx"

    def int8_model(self, engine: str, source: str = "operating_point") -> Path:
        """The deployable int8 file of `quantize.engine` (the `int8` / `student-int8` variant everywhere downstream)."""
        names = {"openvino": "int8.xml", "onnxruntime": "int8.onnx"}
        return self.quantized_dir(source) / names[engine]

    # ---- distillation
    @property
    def distill_pool(self) -> Path: return self.root / "data" / "distill" / "pool.safetensors"
    @property
    def distill_cache(self) -> Path: return self.root / "data" / "cache" / "distill"
    @property
    def distill_live(self) -> Path: return self.root / "dvclive" / "distill"
    @property
    def distill_reports(self) -> Path: return self.root / "reports" / "distill"

    # ---- metrics and per-stage reports
    @property
    def teacher_metrics(self) -> Path: return self.root / "metrics" / "teacher.json"
    @property
    def teacher_samples(self) -> Path: return self.root / "reports" / "teacher" / "samples.png"
    @property
    def distill_metrics(self) -> Path: return self.root / "metrics" / "distill.json"
    def prune_metrics(self, amount: float) -> Path: return self.root / "metrics" / "prune" / f"{amount_tag(amount)}.json"
    def prune_layers(self, amount: float) -> Path: return self.root / "reports" / "prune" / f"{amount_tag(amount)}_layers.csv"
    @property
    def prune_profile(self) -> Path: return self.root / "reports" / "prune" / "sensitivity.json"
    @property
    def prune_profile_figure(self) -> Path: return self.root / "reports" / "prune" / "sensitivity.png"
    @property
    def prune_hessians(self) -> Path: return self.root / "data" / "prune" / "hessians.safetensors"
    @property
    def prune_importance(self) -> Path: return self.root / "data" / "prune" / "importance.safetensors"
    def prune_cache(self, amount: float) -> Path: return self.root / "data" / "cache" / "prune" / amount_tag(amount)
    def prune_live(self, amount: float) -> Path: return self.root / "dvclive" / "prune" / amount_tag(amount)

    def quantize_metrics(self, source: str = "operating_point") -> Path:
        return self.root / "metrics" / ("quantize_student.json" if source == "student" else "quantize.json")

    def quantize_reports(self, source: str = "operating_point") -> Path:
        return self.root / "reports" / ("quantize_student" if source == "student" else "quantize")

    def size_metrics(self, variant: str) -> Path: return self.root / "metrics" / "size" / f"{variant}.json"
    @property
    def eval_reference(self) -> Path: return self.root / "data" / "eval" / "reference.npz"
    def eval_metrics(self, variant: str) -> Path: return self.root / "metrics" / "eval" / f"{variant}.json"
    def eval_info(self, variant: str) -> Path: return self.root / "reports" / "eval" / f"{variant}.json"
    def eval_strip(self, variant: str) -> Path: return self.root / "reports" / "eval" / f"{variant}.png"
    @property
    def params_check(self) -> Path: return self.root / "data" / "params_checked.txt"
    @property
    def reports(self) -> Path: return self.root / "reports"

    def quantize_layers(self, source: str = "operating_point") -> Path:
        """Per executed node of the fp32 and int8 OpenVINO models: kernel, precision, time, conv MACs (a report)."""
        return self.quantize_reports(source) / "layers.csv"

    @property
    def downloads(self) -> Path:
        """data/downloads: files fetched by URL (teacher.url), kept outside DVC's outs so a rerun reuses them."""
        return self.root / "data" / "downloads"
