"""Stage fetch_teacher: materialise the teacher, gate it on parity with the original IR, save it with a sample grid."""
from __future__ import annotations

from pathlib import Path

import torch

from ..artifacts.teacher import TeacherRecord
from ..config import load_params
from ..errors import UserError
from ..imaging import grid, resize, save_png, to_uint8
from ..io.checkpoint import save_generator
from ..io.teacher import materialize_teacher
from ..models.mobilestylegan import latents_from_seeds
from ..paths import Paths
from ..runtimes.openvino_ir import ir_parity


def run_fetch_teacher(params_path: str | Path = "params.yaml", root: str | Path = ".") -> TeacherRecord:
    """Write models/teacher.safetensors, reports/teacher/samples.png and metrics/teacher.json (nothing when the
    parity gate fails)."""
    p = load_params(params_path, ["teacher"])["teacher"]
    paths = Paths(Path(root))
    gen, info = materialize_teacher(p, paths.downloads)
    record = TeacherRecord(params={"mapping": sum(t.numel() for t in gen.mapping.parameters()),
                                   "synthesis": sum(t.numel() for t in gen.synthesis.parameters())},
                           resolution=gen.resolution)
    if p["source"] == "random-face":
        parity = ir_parity(gen, p["parity_seeds"], p["parity_truncation"])
        record.parity = {"max_abs": parity["max_abs"], "mean_abs": parity["mean_abs"],
                         "mapping_max_abs": parity["mapping_max_abs"],
                         "openvino_vs_float64_max_abs": parity["openvino_vs_float64_max_abs"],
                         "num_latents": len(p["parity_seeds"]),
                         "truncation": p["parity_truncation"], "tolerance": p["parity_tolerance"]}
        if parity["max_abs"] > p["parity_tolerance"]:
            raise UserError(f"teacher parity {parity['max_abs']:.3g} exceeds teacher.parity_tolerance "
                            f"{p['parity_tolerance']:.3g}; the loaded weights do not reproduce the IR")

    with torch.no_grad():
        images = gen(latents_from_seeds(p["sample_seeds"], gen.config.style_dim), truncation=p["sample_truncation"])
    save_generator(gen, paths.teacher_model, info)
    save_png(grid(to_uint8(resize(images, 256)), columns=4), paths.teacher_samples)
    record.write(paths.teacher_metrics)
    return record
