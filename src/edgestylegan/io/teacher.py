"""Materialise the teacher generator from one of the supported sources, and check it against OpenVINO."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..models.mobilestylegan import Generator, latents_from_seeds
from .checkpoint import load_generator
from .download import fetch
from .ir_reader import load_random_face_generator

DOWNLOAD_DIR = Path("data/downloads")


def materialize_teacher(params: dict) -> tuple[Generator, dict]:
    """params: the validated `teacher` section. Returns the generator and provenance info for the checkpoint."""
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
        dest = DOWNLOAD_DIR / (Path(url.split("?")[0]).name or "teacher.safetensors")
        gen = load_generator(fetch(url, params["sha256"], dest))
        info = {"source": f"url {url}", "sha256": params["sha256"].lower()}
    else:  # Validated centrally; kept for direct callers.
        raise ValueError(f"unknown teacher.source {source!r}")
    return gen.eval(), info


@torch.no_grad()
def openvino_parity(gen: Generator, seeds: list[int], truncation: float) -> dict:
    """Max/mean |ours - OpenVINO (f32)| on the 1024^2 image for each seed; both get the same w (ours).

    Also |OpenVINO - ours in float64|: the reference's own float32 round-off, i.e. the floor any float32
    implementation can reach (about 1e-4 on this 23-layer net with activations up to ~170).
    """
    import copy

    from ..runtimes.openvino_ir import OpenVINOGenerator

    gen64 = copy.deepcopy(gen).double()

    runtime = OpenVINOGenerator(precision="f32")
    z = latents_from_seeds(seeds, gen.config.style_dim)
    w_ours = gen.style(z, truncation)
    w_ir = runtime.style(z.numpy())
    mapping_max = float(np.abs(w_ir - gen.style(z, 1.0).numpy()).max())
    per_seed = {}
    for seed, w in zip(seeds, w_ours):
        ours = gen.synthesis(w[None]).numpy()
        ref = runtime.synthesize(w[None].numpy())
        diff = np.abs(ours - ref)
        ref_error = np.abs(gen64.synthesis(w[None].double()).numpy() - ref)
        per_seed[str(seed)] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                               "openvino_vs_float64_max_abs": float(ref_error.max())}
    return {
        "max_abs": max(v["max_abs"] for v in per_seed.values()),
        "mean_abs": float(np.mean([v["mean_abs"] for v in per_seed.values()])),
        "mapping_max_abs": mapping_max,
        "openvino_vs_float64_max_abs": max(v["openvino_vs_float64_max_abs"] for v in per_seed.values()),
        "per_seed": per_seed,
    }
