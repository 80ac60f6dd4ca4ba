"""The student family side by side: every student architecture and width distilled, evaluated and timed against the
original OpenVINO IR teacher in one interleaved latency run. The DAG holds one student (the `student` params); all of
them would exceed the `dvc repro` budget, so this is a benchmark (scripts/student_family.py), not a stage.

Each member is the params with a few `student` (and for some, `distill`) keys replaced (`FAMILY`). Stage distill's and stage
evaluate's own functions run in a scratch project whose teacher, distillation pool and evaluation reference are links
to this project's. Latency: batch 1, z -> image at each model's own resolution, `account.threads` threads, median of
`account.latency_repeats` rounds in which every runner is timed once; each student on PyTorch and on OpenVINO (its ONNX
export), the faster counting, divided by the random-face IR teacher (OpenVINO f32, 1024 px) of the same run.
Writes reports/benchmarks/students.{csv,md,png} and each member's evaluation strip in students_samples/ (another
stem: out_name).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import yaml

from ..config import read_yaml, validate
from ..errors import UserError
from ..io.atomic import atomic_path, write_text
from ..io.tables import csv_text
from ..metrics import accounting as acc
from ..metrics.latency import cpu_info, generator_call, measure, openvino_ir_call, torch_threads
from ..models.mobilestylegan import GeneratorConfig, latents_from_seeds
from ..paths import Paths
from ..report.figures import student_latency_quality
from .distill import run_distill
from .evaluate import run_evaluate
from .loaders import load_model
from .scratch import link_inputs

TRUNK_TRAINING = {"lr_pretrained": 1.0e-4, "crop": 0, "perceptual": "enl0", "steps": 400}
"""distill keys of the trunk-trained members: every layer fine-tuned with the multi-scale enl0 perceptual loss."""

FAMILY: dict[str, dict[str, dict]] = {
    "mobilestylegan": {"student": {"arch": "mobilestylegan", "width": 1.0}},
    "blaze": {"student": {"arch": "blaze", "width": 1.0}},
    "blaze, last block 256 ch": {"student": {"arch": "blaze", "width": 1.0, "last_block_channels": 256}},
    "blaze w0.75": {"student": {"arch": "blaze", "width": 0.75}},
    "blaze w0.5": {"student": {"arch": "blaze", "width": 0.5}},
    "blaze, trunk trained": {"student": {"arch": "blaze", "width": 1.0, "all_heads": True},
                             "distill": TRUNK_TRAINING},
    "blaze, last block 256 ch, trunk trained": {"student": {"arch": "blaze", "width": 1.0, "last_block_channels": 256,
                                                            "all_heads": True},
                                                "distill": TRUNK_TRAINING},
}
"""name -> {params section: keys replaced}. `last_block_channels` (student) is the last block's entry of `channels`;
a last block narrower than the teacher's is channel-selected and then trained with its head on cached trunk inputs.
The trunk-trained blazes fine-tune every layer with the multi-scale perceptual loss (about 25 min of distillation
each on a 2-core CPU), so they run only when named."""

DEFAULT_MEMBERS = [name for name in FAMILY if "distill" not in FAMILY[name]]
"""The members a plain `scripts/student_family.py` run builds: those distilled with the params' own distill settings."""

COLUMNS = ["student", "arch", "width", "channels", "gmac", "params_synthesis", "distill_seconds", "val_psnr_db",
           "fd_enl0", "fd_over_floor", "kid", "fid_vs_teacher", "psnr_db", "ssim", "latency_ms", "runtime",
           "latency_vs_teacher_ir", "latency_torch_ms", "latency_openvino_ms", "samples"]


def member_params(raw: dict, name: str) -> dict:
    """The params of FAMILY member `name`: `raw` with that member's `student` and `distill` keys replaced."""
    if name not in FAMILY:
        raise UserError(f"unknown student {name!r}: choose from {list(FAMILY)}")
    overrides = FAMILY[name]
    student = {**raw["student"], **{k: v for k, v in overrides["student"].items() if k != "last_block_channels"}}
    if "last_block_channels" in overrides["student"]:
        channels = list(student["channels"])
        last = GeneratorConfig(resolution=student["resolution"], arch=student["arch"]).num_blocks
        channels[last] = overrides["student"]["last_block_channels"]
        student["channels"] = channels
    return {**raw, "student": student, "distill": {**raw["distill"], **overrides.get("distill", {})}}


def _markdown(rows: list[dict], floor: float, protocol: dict, teacher_ms: float, cpu: dict) -> str:
    isa = ", ".join(sorted(cpu["isa"])) or "unknown"
    lines = ["# Student family: latency vs quality", "",
             f"fd_enl0 / KID (EfficientNet-Lite0 features) vs the teacher's samples, N = {protocol['n']}, "
             f"{protocol['resolution']} px; PSNR / SSIM against the teacher's image of the same latent; noise floor "
             f"fd_enl0 {floor:.1f}. Held-out PSNR: distill's validation latents at the student resolution. Latency: "
             f"batch 1, {protocol['threads']} threads, median of {protocol['repeats']} interleaved rounds, each "
             f"student on its faster runtime (PyTorch or OpenVINO fp32), over the random-face OpenVINO IR teacher "
             f"(f32, 1024 px) in the same run: {teacher_ms:.1f} ms. CPU: {cpu['model_name']} ({isa}). "
             f"fid_vs_teacher: the same protocol in FID Inception features (the independent check of a student "
             f"trained with the enl0 perceptual loss). Samples: the evaluation strip (the latents of "
             f"reports/eval/teacher.png).", "",
             "| student | channels | GMAC | distill s | held-out PSNR dB | fd_enl0 | x floor | KID | fid_vs_teacher | "
             "PSNR dB | SSIM | latency ms | runtime | x teacher IR | samples |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['student']} | {r['channels']} | {r['gmac']:.2f} | {r['distill_seconds']:.0f} | "
                     f"{r['val_psnr_db']:.2f} | {r['fd_enl0']:.1f} | {r['fd_over_floor']:.2f} | {r['kid']:.4f} | "
                     f"{r['fid_vs_teacher']:.1f} | {r['psnr_db']:.2f} | {r['ssim']:.3f} | {r['latency_ms']:.1f} | "
                     f"{r['runtime']} | {r['latency_vs_teacher_ir']:.3f} | {r['samples']} |")
    return "\n".join(lines) + "\n"


def _latency(models: dict[str, Path], threads: int, repeats: int, warmup: int, tmp: Path) -> dict:
    from ..runtimes.onnx import OpenVINOOnnxGenerator, export_onnx
    from ..runtimes.openvino_ir import OpenVINOGenerator

    z = latents_from_seeds([0])
    runners = {("teacher", "openvino_ir_fp32"): openvino_ir_call(OpenVINOGenerator(precision="f32",
                                                                                   num_threads=threads), z)}
    for i, (name, path) in enumerate(models.items()):
        gen = load_model(path).eval()
        runners[(name, "torch_fp32")] = generator_call(gen, z)
        onnx = export_onnx(gen, tmp / f"student{i}.onnx")
        runners[(name, "openvino_fp32")] = generator_call(OpenVINOOnnxGenerator(onnx, threads), z)
    with torch_threads(threads):
        return measure(runners, repeats=repeats, warmup=warmup, progress=True)


def run_student_family(names: list[str], params_path: str | Path = "params.yaml", root: str | Path = ".",
                       out_name: str = "students") -> list[dict]:
    """out_name: the file stem of the table and figure under reports/benchmarks/."""
    if not names:
        raise UserError(f"no students given: choose from {list(FAMILY)}")
    if not out_name or "/" in out_name or out_name.startswith("."):
        raise UserError(f"--out {out_name!r}: give a plain file stem (written under reports/benchmarks/), e.g. students")
    paths = Paths(Path(root))
    raw = read_yaml(params_path)
    validate(raw, ["student", "distill", "eval", "account"], str(params_path))
    members = {name: member_params(raw, name) for name in names}
    for name, member in members.items():
        validate(member, ["student", "distill"], f"{params_path} (student {name!r})")
    rows, models, protocol, floor = [], {}, {}, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Paths(Path(tmp) / "project")
        link_inputs(paths, scratch, [paths.teacher_model, paths.distill_pool, paths.eval_reference],
                    "`dvc repro distill_pool eval_reference`")
        for i, (name, member) in enumerate(members.items()):
            print(f"student {name}: distill", flush=True)
            params = scratch.root / f"params{i}.yaml"
            params.write_text(yaml.safe_dump(member))
            shutil.rmtree(scratch.distill_live, ignore_errors=True)   # Each member logs its own curves.
            distilled = run_distill(params, scratch.root)
            print(f"student {name}: evaluate", flush=True)
            record, _ = run_evaluate("student", params, scratch.root)
            strip = paths.reports / "benchmarks" / f"{out_name}_samples" / f"{i}.png"
            with atomic_path(strip) as partial:
                shutil.copyfile(scratch.eval_strip("student"), partial)
            models[name] = Path(tmp) / f"student{i}.safetensors"
            shutil.copyfile(scratch.student_model, models[name])
            gen = load_model(models[name])
            floor = record.noise_floor["fd_enl0"]
            protocol = {"n": record.n, "resolution": record.resolution}
            rows.append({"student": name, "arch": member["student"]["arch"], "width": member["student"]["width"],
                         "channels": "/".join(str(c) for c in gen.config.used_channels),
                         "gmac": acc.mac_summary(gen.config)["gmac"],
                         "params_synthesis": acc.parameter_counts(gen)["synthesis"]["params"],
                         "distill_seconds": distilled.train["seconds"], "val_psnr_db": distilled.val["psnr_db"],
                         "fd_enl0": record.scores["fd_enl0"], "fd_over_floor": record.scores["fd_enl0"] / floor,
                         "kid": record.scores["kid_enl0"]["mean"],
                         "fid_vs_teacher": record.scores.get("fid_vs_teacher", float("nan")),
                         "psnr_db": record.paired["psnr_db"], "ssim": record.paired["ssim"],
                         "samples": str(strip.relative_to(paths.root))})
        a = raw["account"]
        print(f"latency: {len(models)} students and the teacher IR, interleaved", flush=True)
        start = time.perf_counter()
        timings = _latency(models, a["threads"], a["latency_repeats"], a["latency_warmup"], Path(tmp))
        print(f"latency run: {time.perf_counter() - start:.0f} s", flush=True)
    teacher_ms = timings[("teacher", "openvino_ir_fp32")]["median_ms"]
    for row in rows:
        torch_ms = timings[(row["student"], "torch_fp32")]["median_ms"]
        openvino_ms = timings[(row["student"], "openvino_fp32")]["median_ms"]
        runtime, best = min((("torch_fp32", torch_ms), ("openvino_fp32", openvino_ms)), key=lambda t: t[1])
        row.update(latency_ms=best, runtime=runtime, latency_vs_teacher_ir=best / teacher_ms,
                   latency_torch_ms=torch_ms, latency_openvino_ms=openvino_ms)
    cpu = cpu_info()
    protocol.update(threads=raw["account"]["threads"], repeats=raw["account"]["latency_repeats"])
    out = paths.reports / "benchmarks"
    write_text(out / f"{out_name}.csv", csv_text(rows, COLUMNS))
    write_text(out / f"{out_name}.md", _markdown(rows, floor, protocol, teacher_ms, cpu))
    student_latency_quality(rows, floor, protocol, out / f"{out_name}.png")
    return rows
