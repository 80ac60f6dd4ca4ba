"""reports/report.md, reports/metrics.csv, reports/plots/*.csv and reports/figures/*.png from the metrics files."""
from __future__ import annotations

import csv
import math
from pathlib import Path

from ..io.atomic import atomic_path, write_text
from . import figures
from .collect import Sources, Variant, collect, variants_from_params
from .earlier import comparison_rows

SPACE_SHORT = {"fd_enl0": "EfficientNet-Lite0 FD (1280-d)", "fid": "Inception-v3 FID (2048-d)"}


def _num(x, spec=".3g", scale=1.0, suffix="") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x * scale:{spec}}{suffix}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows([["" if v is None else v for v in r] for r in rows])


def protocol_from(eval_p: dict, side: dict, extra: dict) -> dict:
    info = side["info"].get("teacher") or next(iter(side["info"].values()), {})
    spaces = info.get("feature_spaces") or {}
    first = eval_p["feature_spaces"][0]
    fd_key = (spaces.get(first) or {}).get("fd_key", "fd_enl0" if first == "enl0" else "fid")
    kid_key = (spaces.get(first) or {}).get("kid_key", "kid_enl0" if first == "enl0" else "kid_inception")
    n = eval_p["num_samples"]
    return {"n": n, "fd_key": fd_key, "kid_key": kid_key, "space_short": SPACE_SHORT.get(fd_key, fd_key),
            "spaces": spaces, "resolution": eval_p["resolution"], "truncation": eval_p["truncation"],
            "seeds": f"{eval_p['seed']}..{eval_p['seed'] + n - 1}",
            "reference_seeds": f"{eval_p['reference_seed']}..{eval_p['reference_seed'] + n - 1}",
            "kid": info.get("kid", ""), "inception": info.get("inception_weights", "unknown"),
            "reference_stats": info.get("reference_stats"), "feature_spaces": eval_p["feature_spaces"], **extra}


def _protocol_md(p: dict) -> str:
    lines = [
        f"- **Latents**: N = {p['n']} evaluation latents (seeds {p['seeds']}), one z per seed, truncation "
        f"psi = {p['truncation']:g}{' (untruncated)' if p['truncation'] == 1 else ''}, the model's fixed noise maps; "
        "every variant gets the same latents and noise.",
        f"- **Reference**: the teacher's own images for the disjoint seeds {p['reference_seeds']} (same N). The "
        "teacher row, teacher vs this reference, is the **noise floor**: the value a perfect copy of the teacher "
        "would get at this N.",
        f"- **Resolution**: images are area-downsampled to {p['resolution']} px (or a variant's own size if smaller) "
        "before feature extraction and PSNR/SSIM; PSNR/SSIM compare each image with the teacher's image of the same "
        "latent at that resolution (uint8, scikit-image; SSIM with Wang et al.'s Gaussian window).",
    ]
    for name, s in p["spaces"].items():
        lines.append(f"- **Feature space `{name}`**: {s['label']} -> `{s['fd_key']}` (Frechet distance), "
                     f"`{s['kid_key']}` (KID: {p['kid']}; shown x 10^3), precision/recall (k = 3); all computed "
                     "with torch-fidelity." + (" This is not FID." if name != "inception" else ""))
        if p["n"] < s["dim"]:
            lines.append(f"  - N = {p['n']} is below the feature dimension {s['dim']}: the covariance estimate is "
                         f"rank-deficient and `{s['fd_key']}` is biased upward. Read it only against the noise floor "
                         "at the same N; KID is unbiased.")
    if "inception" not in p["spaces"]:
        lines.append(f"- **FID (Inception-v3)**: not computed: `inception` is not in eval.feature_spaces. Inception "
                     f"weights: {p['inception']}.")
    if p.get("reference_stats"):
        rs = p["reference_stats"]
        lines.append(f"- **Precomputed statistics**: `{rs['key']}` is the Frechet distance to `{rs['path']}` "
                     f"(sha256 {rs['sha256'][:12]}...) in the `{rs['space']}` space; our images are resized by "
                     "torch-fidelity, not by clean-fid, so values differ slightly from clean-fid's own.")
    return "\n".join(lines)


def build_report(eval_p: dict, report_p: dict, prune_amounts: list[float], root: Path, out: Path,
                 extra: dict | None = None) -> dict:
    """Write every report output under `out` (normally reports/); returns {figure name: caption or reason}."""
    variants: list[Variant] = variants_from_params(report_p["variants"], prune_amounts)
    rows, side = collect(variants, Sources(root))
    p = protocol_from(eval_p, side, extra or {})
    fd, kid = p["fd_key"], p["kid_key"]
    has_fid = any(r.get("fid") is not None for r in rows) and fd != "fid"

    # CSVs: one row per variant, plus the plot data for `dvc plots diff`.
    columns = list(dict.fromkeys(k for r in rows for k in r))
    _write_csv(out / "metrics.csv", columns, [[r.get(c) for c in columns] for r in rows])
    for r in rows:
        if r["kind"] == "teacher" and r["bytes_dense"] is None:
            r["bytes_dense"] = r["bytes"]   # The teacher is stored dense.
    sweep = [r for r in rows if r["kind"] in ("teacher", "pruned")]
    _write_csv(out / "plots" / "sweep.csv",
               ["variant", "amount", "sparsity_synthesis_pct", fd, f"{kid}_mean", "psnr_db", "ssim"],
               [[r["variant"], r["amount"] or 0.0,
                 None if r["sparsity_synthesis"] is None else 100 * r["sparsity_synthesis"],
                 r.get(fd), r.get(f"{kid}_mean"), r["psnr_db"], r["ssim"]] for r in sweep])
    _write_csv(out / "plots" / "latency.csv", ["label", "variant", "runtime", "latency_ms"],
               [[f"{v} / {rt}", v, rt, ms] for v, lat in side["latency"].items() for rt, ms in lat.items()])
    layer_rows = [[v, i, name, s] for v, layers in side["per_layer"].items()
                  for i, (name, s) in enumerate(layers.items())]
    _write_csv(out / "plots" / "layer_sparsity.csv", ["variant", "layer_index", "layer", "sparsity"], layer_rows)

    # Figures.
    fig_dir = out / "figures"
    strips = [(v.label, Sources(root).strip(v), (side["info"].get(v.id) or {}).get("resolution", eval_p["resolution"]))
              for v in variants]
    grid_cols = min(report_p["grid_columns"], eval_p["strip_columns"])
    seeds = list(range(eval_p["seed"], eval_p["seed"] + grid_cols))
    jobs = {
        "samples_grid": lambda path: figures.sample_grid(strips, grid_cols, seeds, path),
        "metric_vs_sparsity": lambda path: figures.metric_vs_sparsity(rows, p, path),
        "size_vs_metric": lambda path: figures.size_vs_metric(rows, p, path),
        "latency_by_runtime": lambda path: figures.latency_by_runtime(side["latency"], path),
        "per_layer_sparsity": lambda path: figures.per_layer_sparsity(side["per_layer"], path),
    }
    captions = {}
    for name, job in jobs.items():
        path = fig_dir / f"{name}.png"
        try:
            captions[name] = (True, job(path))
        except figures.NoData as e:
            path.unlink(missing_ok=True)   # A stale figure from an earlier run must not look current.
            captions[name] = (False, str(e))

    # Tables.
    def psnr(r):
        if r["psnr_db"] is None:
            return "∞ (identical)" if r.get("identical_images") else "—"
        note = f" ({r['identical_images']} identical excluded)" if r.get("identical_images") else ""
        return f"{r['psnr_db']:.2f}{note}"

    def kid_cell(r, key):
        m, s = r.get(f"{key}_mean"), r.get(f"{key}_std")
        return "—" if m is None else f"{1e3 * m:.2f} ± {1e3 * (s or 0):.2f}"

    def latency(r):
        return "—" if r["latency_ms"] is None else f"{r['latency_ms']:.0f} ({r['latency_runtime']})"

    header = ["variant", "px", "params", "non-zeros", "on disk", "MACs", "latency ms (runtime)", f"`{fd}`",
              f"`{kid}` x10^3"] + (["`fid`"] if has_fid else []) + ["PSNR dB", "SSIM"]
    main = [[f"{r['variant']}" + (" (noise floor)" if r["kind"] == "teacher" else ""),
             _num(r["resolution"], ".0f"), _num(r["params"], ",.0f"), _num(r["nonzeros"], ",.0f"),
             _num(r["bytes"], ".2f", 1e-6, " MB"), _num(r["macs"], ".2f", 1e-9, " G"), latency(r),
             _num(r.get(fd), ".4g"), kid_cell(r, kid)] + ([_num(r.get("fid"), ".4g")] if has_fid else [])
            + [psnr(r), _num(r["ssim"], ".4f")] for r in rows]
    sweep_header = ["amount", "sparsity: pruned tensors", "synthesis net", "whole generator", "non-zeros", "dense",
                    "on disk", f"`{fd}`", f"`{kid}` x10^3", "PSNR dB", "SSIM"]
    sweep_rows = [[_num(r["amount"] or 0.0, "g"), _num(r["sparsity_pruned"], ".2f", 100, " %"),
                   _num(r["sparsity_synthesis"], ".2f", 100, " %"), _num(r["sparsity_all"], ".2f", 100, " %"),
                   _num(r["nonzeros"], ",.0f"),
                   _num(r["bytes_dense"], ".2f", 1e-6, " MB"), _num(r["bytes"], ".2f", 1e-6, " MB"),
                   _num(r.get(fd), ".4g"), kid_cell(r, kid), psnr(r), _num(r["ssim"], ".4f")] for r in sweep]
    student = next((r for r in rows if r["kind"] == "student"), None)
    def seconds(info):
        sec = info.get("seconds") or {}
        parts = ("load", "generate_and_features", "metrics")
        return " / ".join(_num(sec.get(k), ".0f") for k in parts) if sec else "—"

    throughput = []
    for r in rows:
        info = side["info"][r["variant"]]
        reused = info.get("is_teacher")
        throughput.append([r["variant"], r["runtime"] or "—",
                           _num(r["gen_images_per_s"], ".2f") + (" (eval_reference)" if reused else ""),
                           _num((info.get("generation") or {}).get("parity_max_abs"), ".1e"),
                           "reused" if reused else _num(info.get("feature_images_per_s"), ".1f"), seconds(info)])

    md = [
        "# MobileStyleGAN compression study: results",
        "",
        "Generated by `dvc repro report` from the files under `metrics/`; do not edit by hand. Every number below "
        "was measured by this pipeline on the pretrained MobileStyleGAN FFHQ-1024 teacher.",
        "",
        "## How the quality numbers were measured",
        "",
        _protocol_md(p),
        "",
        "## All variants",
        "",
        f"Quality columns: N = {p['n']}, reference = teacher samples (disjoint seeds), space as named. `on disk` is "
        "the size of the stored model file; `non-zeros` counts stored weights that are not zero; latency is the "
        "fastest runtime measured by stage account (all runtimes in the latency figure).",
        "",
        _md_table(header, main),
        "",
    ]
    if student:
        md += [f"The student (and its int8 model, student-int8) runs at {student['native_resolution']} px: its "
               f"rows compare it with the teacher "
               f"downsampled to {student['resolution']} px on the same latents; its noise floor at that resolution "
               f"is `{fd}` = {_num(student.get('floor_' + fd), '.4g')}.", ""]
    md += ["## Pruning sweep", "",
           f"One-shot pruning of the teacher at each `prune.amounts` entry (amount 0 = the teacher; "
           f"prune.method / scope / targets = {p.get('prune_recipe', '?')}). Sparsity is the share of zero weights "
           "in the pruned tensors, in the synthesis network (the earlier study's denominator) and in the whole "
           "generator (mapping network included); `dense` is the file size with the zeros stored, `on disk` the "
           "sparse file written.", "",
           _md_table(sweep_header, sweep_rows), "",
           "## Earlier study vs ours", "",
           "The earlier EdgeStyleGAN study's published numbers next to ours, with the reason for each difference "
           "(facts from reading that study's code).", "",
           _md_table(["quantity", "earlier study", "ours", "why they differ"],
                     [list(r) for r in comparison_rows(rows, side, p)]),
           "", "## Figures", ""]
    titles = {"samples_grid": "Same-latent samples", "metric_vs_sparsity": "Quality vs sparsity",
              "size_vs_metric": "Size vs quality (Pareto)", "latency_by_runtime": "Latency by runtime",
              "per_layer_sparsity": "Per-layer sparsity"}
    for name, (ok, text) in captions.items():
        md += [f"### {titles[name]}", ""]
        md += [f"![{titles[name]}](figures/{name}.png)", "", text, ""] if ok else [f"Not drawn: {text}.", ""]
    md += ["## Evaluation runtime", "",
           "How each variant's evaluation images were generated (the fastest runtime that matches PyTorch: OpenVINO "
           "f32 is used only after its first batch matched PyTorch within eval.parity_tolerance).", "",
           _md_table(["variant", "runtime", "generation images/s", "OpenVINO vs PyTorch max abs", "features images/s",
                      "seconds: load / generate + features / metrics"], throughput), "",
           "Generation rates include the runtime conversion and the PyTorch parity batch; they were measured while "
           "the stage ran, so they reflect the machine's load at that time.", ""]
    if side["missing"]:
        md += ["## Missing inputs", ""] + [f"- {m}" for m in side["missing"]] + [""]
    md += ["## Files", "", "- `reports/metrics.csv`: every column above, one row per variant.",
           "- `reports/plots/*.csv`: the data behind the figures (`dvc plots diff` reads them).",
           "- `reports/eval/<variant>.png`: each variant's sample strip; `reports/eval/<variant>.json`: its protocol "
           "and timings.", ""]
    write_text(out / "report.md", "\n".join(md))
    return captions
