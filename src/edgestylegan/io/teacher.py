"""Materialise the teacher generator from one of the supported sources (the parity check against the original
IR is `runtimes.openvino_ir.ir_parity`)."""
from __future__ import annotations

from pathlib import Path

from ..models.mobilestylegan import Generator
from .checkpoint import load_generator
from .download import fetch
from .ir_reader import load_random_face_generator


def materialize_teacher(params: dict, download_dir: Path) -> tuple[Generator, dict]:
    """params: the validated `teacher` section; source=url downloads into `download_dir` (`Paths.downloads`).
    Returns the generator and provenance info for the checkpoint."""
    source = params["source"]
    if source == "random-face":
        gen = load_random_face_generator()
        gen.estimate_w_avg(params["w_avg_samples"], params["w_avg_seed"])
        info = {"source": "random-face==2021.7.21.1 OpenVINO IR",
                "w_avg": f"mean of mapping(z) over {params['w_avg_samples']} z, seed {params['w_avg_seed']}"}
    elif source == "file":
        gen = load_generator(params["path"])
        info = {"source": f"file {params['path']}"}
    elif source == "url":
        url = params["url"]
        dest = Path(download_dir) / (Path(url.split("?")[0]).name or "teacher.safetensors")
        gen = load_generator(fetch(url, params["sha256"], dest))
        info = {"source": f"url {url}", "sha256": params["sha256"].lower()}
    else:  # Validated centrally; kept for direct callers.
        raise ValueError(f"unknown teacher.source {source!r}")
    return gen.eval(), info
