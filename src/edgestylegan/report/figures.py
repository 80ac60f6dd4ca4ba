"""Report figures (matplotlib, offline PNGs). Each function returns a caption, or raises `NoData` with the reason."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ..io.atomic import atomic_path  # noqa: E402

STRIP_PADDING = 2   # edgestylegan.imaging.grid's default padding, used by the evaluate stage's strips.


class NoData(Exception):
    """The figure cannot be drawn from the metrics present; the message says what is missing."""


def _save(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)


def _floor(ax, value, label="noise floor (teacher vs teacher)"):
    if value is not None:
        ax.axhline(value, color="0.4", linestyle="--", linewidth=1, label=label)


#----------------------------------------------------------------------------


def metric_vs_sparsity(rows: list[dict], protocol: dict, path: Path) -> str:
    fd = protocol["fd_key"]
    pts = sorted((r for r in rows if r["kind"] in ("teacher", "pruned") and r.get("sparsity_synthesis") is not None
                  and r.get(fd) is not None), key=lambda r: r["sparsity_synthesis"])
    if len([r for r in pts if r["kind"] == "pruned"]) < 1:
        raise NoData("no pruned variant in report.variants")
    teacher = next((r for r in rows if r["kind"] == "teacher"), None)
    x = [100 * r["sparsity_synthesis"] for r in pts]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    a1.plot(x, [r[fd] for r in pts], "o-", label=fd)
    for r, xi in zip(pts, x):
        a1.annotate(r["variant"], (xi, r[fd]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    _floor(a1, teacher and teacher.get(fd))
    a1.set_ylabel(f"{fd} (lower is better)")
    a1.set_title(f"{protocol['space_short']}, N = {protocol['n']}, vs teacher samples", fontsize=9)
    a1.legend(fontsize=8)
    pr = [(xi, r) for xi, r in zip(x, pts) if r.get("psnr_db") is not None]
    a2.plot([xi for xi, _ in pr], [r["psnr_db"] for _, r in pr], "o-", color="tab:green")
    a2.set_ylabel("PSNR vs teacher (dB, higher is better)")
    a2.set_title(f"paired with the teacher (same latents), {protocol['resolution']} px", fontsize=9)
    a3.plot(x, [r["ssim"] for r in pts], "s-", color="tab:purple")
    a3.set_ylabel("SSIM vs teacher (1 = identical)")
    a3.set_title(f"paired with the teacher (same latents), {protocol['resolution']} px", fontsize=9)
    for ax in (a1, a2, a3):
        ax.set_xlabel("zero weights in the synthesis network (%)")
        ax.margins(x=0.12)
    fig.suptitle("Quality vs pruning sparsity", fontsize=11)
    _save(fig, path)
    return (f"{fd} (left), PSNR and SSIM against the teacher's image of the same latent vs the share of zero "
            "synthesis weights (the teacher is 0 %; its PSNR is infinite and not drawn); the dashed line is the "
            f"noise floor (teacher vs teacher at the same N = {protocol['n']}).")


def size_vs_metric(rows: list[dict], protocol: dict, path: Path) -> str:
    fd = protocol["fd_key"]
    pts = [r for r in rows if r.get("bytes") and r.get(fd) is not None]
    if len(pts) < 2:
        raise NoData(f"fewer than two variants have both bytes on disk and {fd}")
    teacher = next((r for r in rows if r["kind"] == "teacher"), None)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = {"teacher": "black", "pruned": "tab:blue", "int8": "tab:red", "student": "tab:green",
              "student-int8": "tab:olive"}
    placed: list[tuple[float, float]] = []
    span = max(r[fd] for r in pts) - min(r[fd] for r in pts) or 1.0
    for r in sorted(pts, key=lambda r: r["bytes"]):
        x, y = r["bytes"] / 1e6, r[fd]
        ax.scatter(x, y, color=colors.get(r["kind"], "gray"), zorder=3)
        # Labels of near-coincident points go below instead of on top of each other.
        crowded = any(abs(x - px) < 3 and abs(y - py) < 0.06 * span for px, py in placed)
        ax.annotate(r["variant"], (x, y), textcoords="offset points", xytext=(4, -11 if crowded else 4), fontsize=8)
        placed.append((x, y))
    front, best = [], float("inf")   # Pareto front: no other variant is both smaller and better.
    for r in sorted(pts, key=lambda r: (r["bytes"], r[fd])):
        if r[fd] < best:
            front.append(r)
            best = r[fd]
    ax.step([r["bytes"] / 1e6 for r in front], [r[fd] for r in front], where="post", color="tab:orange",
            label="Pareto front", zorder=2)
    _floor(ax, teacher and teacher.get(fd))
    ax.set_xlim(left=0)
    ax.margins(x=0.12, y=0.08)
    ax.set_xlabel("model file size on disk (MB)")
    ax.set_ylabel(f"{fd} (lower is better)")
    ax.set_title(f"Size vs quality ({protocol['space_short']}, N = {protocol['n']}, vs teacher samples)", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
    return (f"Bytes on disk vs {fd}; the orange steps join the variants that no other variant beats on both "
            "size and quality.")


def latency_by_runtime(latency: dict[str, dict[str, float]], path: Path) -> str:
    variants = [v for v, lat in latency.items() if lat]
    if not variants:
        raise NoData("no variant was timed (account.runtimes is empty, or lists no runtime of these variants)")
    runtimes = sorted({rt for v in variants for rt in latency[v]})
    colors = {rt: plt.get_cmap("tab10")(i % 10) for i, rt in enumerate(runtimes)}
    ys, labels, y = [], [], 0.0
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.32 * sum(len(latency[v]) for v in variants) + 0.25 * len(variants)))
    for v in variants:
        for rt, ms in sorted(latency[v].items(), key=lambda kv: kv[1]):
            ax.barh(y, ms, color=colors[rt], height=0.8)
            ax.text(ms, y, f" {ms:.0f}", va="center", fontsize=7)
            ys.append(y)
            labels.append(f"{v}  {rt}")
            y += 1
        y += 0.6   # Gap between variants.
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.1)
    ax.set_xlabel("latency per image (ms, batch 1)")
    ax.set_title("Latency by runtime (stage account@<variant>, one run per variant)", fontsize=10)
    _save(fig, path)
    return ("Per-image latency (median, batch 1) of each variant on each runtime it was timed on, from the "
            "variant's own run (metrics/size/<variant>.json): bars of one variant come from one run, bars of two "
            "variants from two runs. openvino_int8 runs the NNCF int8.xml, onnxruntime_int8 the QDQ int8.onnx.")


def per_layer_sparsity(per_layer: dict[str, dict[str, float]], path: Path) -> str:
    series = {v: layers for v, layers in per_layer.items() if layers}
    if not series:
        raise NoData("no pruned variant in report.variants (per-layer sparsity: reports/prune/<amount>_layers.csv)")
    layers = list(next(iter(series.values())))
    fig, ax = plt.subplots(figsize=(max(8, 0.12 * len(layers)), 4))
    for v, values in series.items():
        ax.plot(range(len(layers)), [100 * (values.get(name) or 0.0) for name in layers], ".-", label=v)
    step = max(1, len(layers) // 40)
    short = [name.removeprefix("synthesis.").removesuffix(".weight") for name in layers]
    ax.set_xticks(range(0, len(layers), step), [short[i] for i in range(0, len(layers), step)], rotation=90,
                  fontsize=6)
    ax.set_ylabel("zero weights in the layer (%)")
    ax.set_title("Per-layer sparsity (synthesis network, in module order)", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
    return "Share of zero weights in each layer for every pruning amount (module order, input to output)."


def sensitivity_curves(levels: list[float], layers: dict[str, dict], path: Path) -> str:
    """Each targeted tensor's relative output error vs its own sparsity (stage prune_profile), coloured by layer kind."""
    groups = sorted({row["group"] for row in layers.values()})
    colours = dict(zip(groups, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in layers.values():
        ax.plot([100 * x for x in levels], [max(e, 1e-7) for e in row["error"]], color=colours[row["group"]],
                alpha=0.6, linewidth=1)
    for group in groups:
        ax.plot([], [], color=colours[group], label=group)
    ax.set_yscale("log")
    ax.set_xlabel("sparsity of the layer alone (%)")
    ax.set_ylabel("relative output error ||WX - W'X||^2 / ||WX||^2")
    ax.set_title("Per-layer sensitivity (OBS pruning, calibration inputs of the dense model)", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
    return "Relative output error of every targeted layer pruned alone (OBS) vs its sparsity, by layer kind."


def sample_grid(strips: list[tuple[str, Path, int]], columns: int, seeds: list[int], path: Path,
                tile: int = 160) -> str:
    """strips: (row label, strip PNG, tile size in that strip). Rows = variants, columns = the same latents."""
    present = [(label, p, size) for label, p, size in strips if p.is_file()]
    if not present:
        raise NoData("no sample strips in reports/eval/ (stage evaluate)")
    rows = []
    for label, p, size in present:
        strip = Image.open(p).convert("RGB")
        n = min(columns, (strip.width - STRIP_PADDING) // (size + STRIP_PADDING))
        tiles = [strip.crop((STRIP_PADDING + i * (size + STRIP_PADDING), STRIP_PADDING,
                             STRIP_PADDING + i * (size + STRIP_PADDING) + size, STRIP_PADDING + size))
                 .resize((tile, tile), Image.LANCZOS) for i in range(n)]
        rows.append((label, tiles))
    ncol, gap = max(len(t) for _, t in rows), 4
    mosaic = np.full((len(rows) * (tile + gap) - gap, ncol * (tile + gap) - gap, 3), 255, dtype=np.uint8)
    for i, (_, tiles) in enumerate(rows):
        for j, t in enumerate(tiles):
            mosaic[i * (tile + gap):i * (tile + gap) + tile, j * (tile + gap):j * (tile + gap) + tile] = np.asarray(t)
    fig, ax = plt.subplots(figsize=(mosaic.shape[1] / 100 + 1.6, mosaic.shape[0] / 100 + 0.6))
    ax.imshow(mosaic)
    ax.set_yticks([i * (tile + gap) + tile / 2 for i in range(len(rows))], [label for label, _ in rows], fontsize=9)
    ax.set_xticks([j * (tile + gap) + tile / 2 for j in range(min(ncol, len(seeds)))],
                  [f"seed {s}" for s in seeds[:ncol]], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("Same latents and noise across variants", fontsize=10)
    _save(fig, path)
    return ("Rows are variants, columns the first evaluation latents (same z and noise in every row), shown at the "
            "evaluation resolution.")


def recovery_curves(rows: list[dict], floor: dict, protocol: dict, path: Path) -> str:
    """Quality vs synthesis sparsity, one line per pruning recovery method (scripts/prune_recovery_curves.py).
    rows: {"recovery", "sparsity_synthesis", fd_key, "kid", "psnr_db"}; floor: the teacher-vs-teacher values."""
    if not rows:
        raise NoData("no recovery measurement")
    fd = protocol["fd_key"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for recovery in dict.fromkeys(r["recovery"] for r in rows):
        pts = sorted((r for r in rows if r["recovery"] == recovery), key=lambda r: r["sparsity_synthesis"])
        x = [100 * r["sparsity_synthesis"] for r in pts]
        for ax, key in zip(axes, (fd, "kid", "psnr_db")):
            ax.plot(x, [r[key] for r in pts], "o-", label=recovery)
    for ax, key, label in zip(axes, (fd, "kid", None), (f"{fd} (lower is better)", f"KID, {protocol['space_short']} "
                                                         "(lower is better)", "PSNR vs teacher (dB, higher is better)")):
        _floor(ax, floor.get(key) if key else None)
        ax.set_ylabel(label)
        ax.set_xlabel("zero weights in the synthesis network (%)")
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[1].set_yscale("symlog", linthresh=1e-3)
    fig.suptitle(f"Pruning recovery methods: {protocol['space_short']}, N = {protocol['n']}, "
                 f"{protocol['resolution']} px, vs the teacher's samples", fontsize=11)
    _save(fig, path)
    return (f"{fd}, KID and PSNR against the teacher's image of the same latent vs synthesis sparsity, per "
            f"recovery method; dashed: the noise floor (teacher vs teacher at N = {protocol['n']}).")


def student_latency_quality(rows: list[dict], floor: float, protocol: dict, path: Path) -> str:
    """fd_enl0 vs latency over the random-face IR teacher, one labelled point per student (scripts/student_family.py).
    rows: {"student", "latency_vs_teacher_ir", "fd_enl0", "runtime"}; floor: the teacher-vs-teacher fd_enl0."""
    if not rows:
        raise NoData("no student measured")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.plot(r["latency_vs_teacher_ir"], r["fd_enl0"], "o")
        ax.annotate(f"{r['student']} ({r['runtime'].split('_')[0]})", (r["latency_vs_teacher_ir"], r["fd_enl0"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    _floor(ax, floor)
    ax.axhline(2 * floor, color="0.6", linestyle=":", linewidth=1, label="2 x noise floor")
    ax.axvline(0.10, color="0.6", linestyle="-.", linewidth=1, label="0.10 x teacher IR latency")
    ax.set_yscale("log")
    ax.set_xlabel("fp32 latency / random-face OpenVINO IR teacher at 1024 px (same run)")
    ax.set_ylabel("fd_enl0 vs the teacher's samples (lower is better)")
    ax.legend(fontsize=8)
    ax.set_title(f"Students: EfficientNet-Lite0 FD, N = {protocol['n']}, {protocol['resolution']} px; batch 1, "
                 f"{protocol['threads']} threads", fontsize=10)
    _save(fig, path)
    return (f"fd_enl0 of every student (N = {protocol['n']}) vs its fp32 latency on its faster runtime, over the "
            "original OpenVINO IR teacher's timed in the same interleaved run; dashed: the noise floor.")
