"""Read every artifact the report shows, through its artifact type, and flatten them into one row per variant.

The variant list comes from params (report.variants, with `pruned` expanded over prune.amounts), never from the
folders, so stale files of a shrunk sweep are ignored. Every file a listed variant needs is required; a missing one
is a UserError naming the stage that writes it:

* metrics/eval/<id>.json (`EvalRecord`), reports/eval/<id>.json (`EvalInfo`) and its .png strip: evaluate@<id>
  (evaluate_pruned@<amount> for pruned-<amount>).
* metrics/size/<id>.json (`SizeRecord`): account@<id> (account_pruned@<amount>).
* metrics/prune/<amount>.json (`PruneRecord`) and reports/prune/<amount>_layers.csv: prune@<amount>.
* metrics/quantize.json / metrics/quantize_student.json (`QuantizeRecord`): quantize / quantize_student, for the
  int8 / student-int8 rows.
* metrics/teacher.json (`TeacherRecord`): fetch_teacher; metrics/distill.json (`DistillRecord`): distill, when a
  student row is listed.
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from ..artifacts.base import Artifact
from ..artifacts.distill import DistillRecord
from ..artifacts.evaluation import EvalInfo, EvalRecord
from ..artifacts.prune import PruneRecord
from ..artifacts.quantize import QuantizeRecord
from ..artifacts.size import SizeRecord
from ..artifacts.teacher import TeacherRecord
from ..errors import UserError
from ..paths import Paths, amount_tag, pruned_variant


@dataclasses.dataclass(frozen=True)
class Variant:
    id: str                       # teacher | pruned-<amount> | int8 | student | student-int8 (file names, CSV rows)
    kind: str                     # teacher | pruned | int8 | student | student-int8
    amount: float | None = None   # Pruning amount for `pruned`.

    @property
    def label(self) -> str:
        return {"teacher": "teacher (noise floor)", "int8": "int8 (operating point)"}.get(self.kind, self.id)

    def stage(self, group: str) -> str:
        """The DVC stage of `group` (evaluate | account) that writes this variant's file."""
        return f"{group}_pruned@{amount_tag(self.amount)}" if self.kind == "pruned" else f"{group}@{self.id}"

    @property
    def quantize_source(self) -> str | None:
        return {"int8": "operating_point", "student-int8": "student"}.get(self.kind)


def variants_from_params(kinds: list[str], prune_amounts: list[float]) -> list[Variant]:
    out = []
    for kind in kinds:
        if kind == "pruned":
            out += [Variant(pruned_variant(a), "pruned", float(a)) for a in prune_amounts]
        else:
            out.append(Variant(kind, kind))
    return out


def read(cls: type[Artifact], path: Path, stage: str):
    """`cls.read(path)`, or a UserError naming `stage` (with its @key, unlike the record's PRODUCER) if missing."""
    if not path.is_file():
        raise UserError(f"{path} not found: run `dvc repro {stage}` (or drop the variant from report.variants)")
    return cls.read(path)


@dataclasses.dataclass
class Inputs:
    """Every artifact the report reads, by variant id where per variant."""

    variants: list[Variant]
    evals: dict[str, EvalRecord]
    infos: dict[str, EvalInfo]
    sizes: dict[str, SizeRecord]
    prunes: dict[str, PruneRecord]
    layers: dict[str, dict[str, float]]       # pruned id -> {tensor: sparsity} (reports/prune/<amount>_layers.csv)
    quantize: dict[str, QuantizeRecord]       # int8 / student-int8 id -> its quantize stage's record
    teacher: TeacherRecord
    distill: DistillRecord | None             # present when a student row is listed
    strips: dict[str, Path]


def read_inputs(variants: list[Variant], paths: Paths) -> Inputs:
    inp = Inputs(variants, {}, {}, {}, {}, {}, {}, read(TeacherRecord, paths.teacher_metrics, "fetch_teacher"),
                 None, {})
    for v in variants:
        inp.evals[v.id] = read(EvalRecord, paths.eval_metrics(v.id), v.stage("evaluate"))
        inp.infos[v.id] = read(EvalInfo, paths.eval_info(v.id), v.stage("evaluate"))
        inp.strips[v.id] = paths.eval_strip(v.id)
        inp.sizes[v.id] = read(SizeRecord, paths.size_metrics(v.id), v.stage("account"))
        if v.kind == "pruned":
            stage = f"prune@{amount_tag(v.amount)}"
            inp.prunes[v.id] = read(PruneRecord, paths.prune_metrics(v.amount), stage)
            layers = paths.prune_layers(v.amount)
            if not layers.is_file():
                raise UserError(f"{layers} not found: run `dvc repro {stage}`")
            with open(layers, newline="") as f:
                inp.layers[v.id] = {r["tensor"]: float(r["sparsity"]) for r in csv.DictReader(f)}
        if v.quantize_source:
            source = v.quantize_source
            stage = "quantize_student" if source == "student" else "quantize"
            inp.quantize[v.id] = read(QuantizeRecord, paths.quantize_metrics(source), stage)
        if v.kind.startswith("student") and inp.distill is None:
            inp.distill = read(DistillRecord, paths.distill_metrics, "distill")
    return inp


def engine_family(runtime: str) -> str:
    """An evaluation runtime name ("openvino-cpu-f32", "onnxruntime-cpu", "pytorch-cuda") -> the latency runtimes'
    prefix ("openvino", "onnxruntime", "torch")."""
    family = runtime.split("-")[0]
    return "torch" if family == "pytorch" else family


def row_of(v: Variant, inp: Inputs) -> dict:
    """One flat row: numbers (None when not measured) and the runtime names, for the tables and metrics.csv."""
    m, info, size = inp.evals[v.id], inp.infos[v.id], inp.sizes[v.id]
    row = {"variant": v.id, "kind": v.kind, "amount": v.amount, "n": m.n, "resolution": m.resolution,
           "native_resolution": m.native_resolution}
    for key, value in m.scores.items():   # Distribution metrics, named by space (fd_enl0, kid_enl0, fid, ...).
        if isinstance(value, dict):
            row[f"{key}_mean"], row[f"{key}_std"] = value["mean"], value["std"]
        else:
            row[key] = value
    for key, value in m.noise_floor.items():
        if isinstance(value, dict):
            row[f"floor_{key}_mean"] = value["mean"]
        else:
            row[f"floor_{key}"] = value
    row.update(psnr_db=m.paired.get("psnr_db"), ssim=m.paired["ssim"], identical_images=m.paired["identical_images"])
    runtime = info.generation_parity["runtime"]
    row.update(runtime=runtime, gen_images_per_s=info.generation.get("images_per_s"))

    dense = size.bytes["dense_fp32"] or size.bytes["file"]   # null: the file is the dense checkpoint itself.
    row.update(params=size.params["generator"]["params"], nonzeros=size.params["generator"]["nonzero"],
               params_synthesis=size.params["synthesis"]["params"],
               bytes=size.bytes["file"]["bytes"], bytes_gzip=size.bytes["file"]["gzip_bytes"],
               bytes_dense=dense["bytes"], macs=size.macs["gmac"] * 1e9)
    # int8 kernels differ between runtimes (they are not interchangeable at parity), so an int8 row shows the latency
    # on the runtime its quality was measured on; float variants show their fastest runtime.
    lat = size.latency_ms
    if v.quantize_source:
        lat = {k: ms for k, ms in lat.items() if k.startswith(engine_family(runtime))}
    best = min(lat.items(), key=lambda kv: kv[1]) if lat else (None, None)
    row["latency_runtime"], row["latency_ms"] = best

    prune = inp.prunes.get(v.id)
    sparsity = prune.sparsity if prune else {}
    if v.kind == "teacher":   # The sweep's amount-0 point: the teacher's own zeros, counted by account@teacher.
        sparsity = {scope: size.params[scope]["sparsity"] for scope in ("synthesis", "generator")}
    row.update(sparsity_pruned=sparsity.get("targeted"), sparsity_synthesis=sparsity.get("synthesis"),
               sparsity_all=sparsity.get("generator"),
               group_sparsity=prune.group_sparsity if prune else None,
               int8_levels=prune.int8_levels if prune else None,
               prune_seconds=sum(prune.seconds.values()) if prune else None,
               earlier_recipe_upstream=prune.earlier_study_recipe["upstream_parameter_set"]["sparsity_synthesis"]
               if prune else None)
    return row


def collect(inp: Inputs) -> list[dict]:
    return [row_of(v, inp) for v in inp.variants]
