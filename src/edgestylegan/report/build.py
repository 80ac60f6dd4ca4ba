"""reports/report.md, reports/metrics.csv, reports/plots/*.csv and reports/figures/*.png from the artifacts."""
from __future__ import annotations

import csv
import math
from pathlib import Path

from ..artifacts.quantize import ENGINE_RUNTIMES
from ..io.atomic import atomic_path, write_text
from ..paths import Paths
from . import figures
from .collect import Inputs, Variant, collect, read_inputs, variants_from_params
from .earlier import HEADER as EARLIER_HEADER, comparison_rows

SPACE_SHORT = {"fd_enl0": "EfficientNet-Lite0 FD (1280-d)", "fid_vs_teacher": "Inception-v3 FID (2048-d)"}
FID_KEY, FID_KID_KEY = "fid_vs_teacher", "kid_vs_teacher"   # metrics.features.SPACES["inception"] keys.
RUNTIME_ENGINES = {runtime: engine for engine, runtime in ENGINE_RUNTIMES.items()}
ENGINE_FILES = {"openvino": "int8.xml + int8.bin (NNCF)", "onnxruntime": "int8.onnx (ONNX Runtime quantize_static)"}


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


def protocol_from(eval_p: dict, inp: Inputs, extra: dict) -> dict:
    info = inp.infos.get("teacher") or next(iter(inp.infos.values()))
    spaces = info.feature_spaces
    first = spaces[eval_p["feature_spaces"][0]]
    n = eval_p["num_samples"]
    return {"n": n, "fd_key": first["fd_key"], "kid_key": first["kid_key"],
            "space_short": SPACE_SHORT.get(first["fd_key"], first["fd_key"]), "spaces": spaces,
            "resolution": eval_p["resolution"], "truncation": eval_p["truncation"],
            "seeds": f"{eval_p['seed']}..{eval_p['seed'] + n - 1}",
            "reference_seeds": f"{eval_p['reference_seed']}..{eval_p['reference_seed'] + n - 1}",
            "kid": info.kid, "inception": info.inception_weights, "reference_stats": info.reference_stats,
            "inception_checks": info.inception, "paired": info.paired, "feature_spaces": eval_p["feature_spaces"],
            **extra}


def _columns_md(p: dict, floors: dict) -> list[str]:
    """The protocol of every quality column: feature space, resize, N, reference, truncation, and its noise floor."""
    psi = f"{p['truncation']:g}" + (" (untruncated)" if p["truncation"] == 1 else "")
    reference = f"the teacher's own samples, disjoint seeds {p['reference_seeds']}"
    rows = []
    for name, s in p["spaces"].items():
        for key, what in ((s["fd_key"], "Frechet distance"), (s["kid_key"], "KID x 10^3"),
                          (f"precision_{name}` / `recall_{name}", "precision / recall (k = 3)")):
            rows.append([f"`{key}`", what, f"{name}: {s['label']}", s["resize"], str(p["n"]), reference, psi,
                         _num(floors.get(key), ".4g") if key == s["fd_key"] else
                         (_num(floors.get(f"{key}_mean"), ".3g", 1e3) if key == s["kid_key"] else "—")])
    rs = p.get("reference_stats")
    if rs:
        space = p["spaces"][rs["space"]]
        rows.append([f"`{rs['key']}`", "Frechet distance", f"{rs['space']}: {space['label']}", space["resize"],
                     str(p["n"]), f"statistics file `{rs['path']}` (sha256 {rs['sha256']})", psi, "—"])
    rows.append(["PSNR dB, SSIM", "paired fidelity", "pixels (uint8 RGB, scikit-image)",
                 f"area downsampling to {p['resolution']} px (or the variant's own size)", p["paired"],
                 "the teacher's image of the same latent", psi, "∞ / 1 (identical)"])
    return [_md_table(["column", "metric", "feature space", "resize", "N", "reference", "truncation",
                       "noise floor (teacher vs teacher)"], rows)]


def _protocol_md(p: dict, floors: dict) -> str:
    lines = _columns_md(p, floors) + ["", "Protocol in words:", "",
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
    checks = p.get("inception_checks")
    if checks:
        measured = ("" if checks["torchscript_max_abs"] is None else
                    f" (max |difference| {checks['torchscript_max_abs']:.1e} <= {checks['tolerance']:g}, stage "
                    "eval_reference)")
        lines.append(f"- **FID Inception weights**: {checks['source']}, sha256 {checks['sha256']}. Checks passed: "
                     f"{checks['checks']}{measured}. Rerunnable offline in tests/test_fid_inception.py and "
                     "tests/test_eval_inception.py: the 94 convolutions map onto torch-fidelity's 94 BasicConv2d with "
                     "equal shapes; features equal the TorchScript network's (x / 128 - 1 input) to 1e-4 and change "
                     "under another input scaling; the streamed evaluation equals torch-fidelity's own loop to 1e-6; "
                     "teacher vs teacher is far below teacher vs a blurred or noised teacher set (KID).")
    if p.get("reference_stats"):
        rs = p["reference_stats"]
        lines.append(f"- **Precomputed statistics**: `{rs['key']}` is the Frechet distance to `{rs['path']}` "
                     f"(sha256 {rs['sha256'][:12]}...) in the `{rs['space']}` space; our images are resized by "
                     "torch-fidelity, not by clean-fid, so values differ slightly from clean-fid's own.")
    return "\n".join(lines)


def _floors(rows: list[dict]) -> dict:
    """Noise-floor values by score column (teacher vs teacher at the evaluation resolution), as stored with the teacher
    row, else with the first row evaluated at its native resolution."""
    row = next((r for r in rows if r["kind"] == "teacher"), None) or next(
        (r for r in rows if r["resolution"] == r["native_resolution"]), {})
    return {k.removeprefix("floor_"): v for k, v in row.items() if k.startswith("floor_")}


def _psnr(x) -> str:
    return "∞ (identical)" if x is None else f"{x:.2f}"


def _latency_md(inp: Inputs, variants: list[Variant]) -> list[str]:
    """Ratios within one run (a variant and its fp32 reference, interleaved in account@<variant>), and the setups."""
    reference_of = {"int8": "float.onnx of stage quantize (ONNX Runtime / OpenVINO); the operating point's float "
                            "model (PyTorch)",
                    "student-int8": "float.onnx of stage quantize_student (ONNX Runtime / OpenVINO); the student "
                                    "(PyTorch)",
                    "pruned": "the dense base model prune.base (PyTorch)"}
    rows = []
    for v in variants:
        s = inp.sizes[v.id]
        for runtime, ms in s.latency_ms.items():
            family = runtime.split("_")[0]
            ratio = s.latency_over_fp32_same_runtime.get(family)
            if ratio is None:
                continue
            ref = s.reference_latency_ms[f"{family}_fp32"]
            rows.append([v.id, f"{runtime} / {family}_fp32", f"{ms:.1f}", f"{ref:.1f}", f"{ratio:.2f}",
                         f"`{v.stage('account')}`", reference_of[v.kind]])
    setups: dict[tuple, list[str]] = {}
    for v in variants:
        st = inp.sizes[v.id].latency_setup
        cpu = st["cpu"]
        key = (cpu["model_name"], ", ".join(cpu["isa"]) or "none of avx2 / avx512 / vnni / amx reported",
               st["threads"], st["repeats"], st["warmup"], st["batch"])
        setups.setdefault(key, []).append(v.id)
    md = ["## Latency", "",
          "Each variant is timed in its own run (stage `account@<variant>`, or `account_pruned@<amount>`), so the "
          "latency column of the table above compares different runs: the machine's load differs between them. "
          "Ratios are taken only within one run: the variant and the fp32 reference it is compared with were timed "
          "interleaved, call by call, in the run named.", ""]
    if rows:
        md += [_md_table(["variant", "runtime / reference runtime", "variant ms (median)", "reference ms (median)",
                          "ratio", "run", "reference"], rows), ""]
    else:
        md += ["No ratio was measured (no variant with an fp32 reference timed on the same runtime).", ""]
    for (cpu, isa, threads, repeats, warmup, batch), ids in setups.items():
        md.append(f"- {', '.join(ids)}: {cpu} (ISA flags: {isa}); batch {batch}, threads {threads}, median of "
                  f"{repeats} calls after {warmup} untimed.")
    return md + [""]


def _int8_md(inp: Inputs, variants: list[Variant], engine: str) -> list[str]:
    md = ["## int8 fidelity per engine, and where the time goes", "",
          "int8 against its fp32 source (float.onnx on OpenVINO f32, checked against PyTorch) at full resolution on held-out latents that no calibration or "
          "validation saw (stage quantize / quantize_student; PSNR over images in [-1, 1]). The `int8` and "
          f"`student-int8` rows above are the quantize.engine = {engine} file ({ENGINE_FILES[engine]}); the other "
          "engine is shown for comparison.", ""]
    rows, notes = [], []
    for v in variants:
        q = inp.quantize.get(v.id)
        if q is None:
            continue
        for runtime, mean in q.psnr_db.items():
            file = ENGINE_FILES[RUNTIME_ENGINES[runtime]]
            rows.append([v.id, runtime, file + (" (the variant's file)" if RUNTIME_ENGINES[runtime] == engine else ""),
                         _psnr(mean), _psnr(q.psnr_db_min[runtime]),
                         "yes" if q.psnr_meets_target[runtime] else "no"])
        fp32, int8 = q.openvino_profile["fp32"], q.openvino_profile["int8"]
        top = lambda prof: ", ".join(f"{k} {ms:.0f} ms" for k, ms in list(prof["time_ms_by_layer_type"].items())[:4])
        isa = ", ".join(sorted(q.cpu.get("isa", {}))) or "unknown"
        notes.append(f"- {v.id}: {q.num_fidelity_latents} held-out latents, target quantize.min_psnr = "
                     f"{q.psnr_target_db:g} dB. OpenVINO performance counters (one call, {q.cpu.get('model_name')}; "
                     f"ISA {isa}): {int8['int8_convs']} of {int8['convs']} convolutions ran int8 kernels, "
                     f"{_num(int8['int8_conv_mac_fraction'], '.1f', 100)} % of the conv MACs. Time by layer type, "
                     f"fp32 ({fp32['time_ms']:.0f} ms in all): {top(fp32)}; int8 ({int8['time_ms']:.0f} ms): "
                     f"{top(int8)}. Per-node kernels: reports/quantize*/layers.csv. Recipe: "
                     + ", ".join(f"{k} {val}" for k, val in q.recipe.items()) + ".")
    if not rows:
        return []
    return md + [_md_table(["variant", "runtime", "file", "PSNR mean dB", "PSNR min dB", "meets target"], rows), ""] \
        + notes + [""]


def _distill_md(inp: Inputs) -> list[str]:
    d = inp.distill
    if d is None:
        return []
    init = (d.val_at_init or {}).get("psnr_db")
    t = d.train
    return ["## Distillation", "",
            f"Stage distill: the student ({d.student['resolution']} px, {d.student['params_synthesis']:,} synthesis "
            f"parameters) against the teacher's images on {d.val['num_latents']:.0f} held-out latents "
            f"(truncation {d.val['truncation']:g}).", "",
            _md_table(["held-out PSNR dB at init", "after training", "worst latent after", "loss first → last",
                       "steps", "training seconds", "pool latents"],
                      [[_num(init, ".2f"), _num(d.val["psnr_db"], ".2f"), _num(d.val["psnr_db_min"], ".2f"),
                        f"{t['loss_total_first']:.4g} → {t['loss_total_last']:.4g}", f"{t['steps']:.0f}"
                        + (f" (resumed at {t['resumed_from']:.0f})" if t["resumed_from"] else ""),
                        f"{t['seconds']:.0f}", f"{t['pool_size']:.0f}"]]), ""]


def _parity_md(inp: Inputs) -> list[str]:
    par = inp.teacher.parity
    md = ["## Teacher parity", ""]
    if par is None:
        return md + ["Not checked: teacher.source is not `random-face`, so there is no original IR to compare "
                     "with.", ""]
    return md + [f"Stage fetch_teacher: our PyTorch teacher vs the original IR on OpenVINO (f32), the same w, over "
                 f"{par['num_latents']:.0f} images of {inp.teacher.resolution} px at truncation "
                 f"{par['truncation']:g}.", "",
                 _md_table(["max abs diff", "mean abs diff", "mapping max abs (w)", "OpenVINO vs our float64 max abs",
                            "tolerance (teacher.parity_tolerance)"],
                           [[f"{par['max_abs']:.2e}", f"{par['mean_abs']:.2e}", f"{par['mapping_max_abs']:.2e}",
                             f"{par['openvino_vs_float64_max_abs']:.2e}", f"{par['tolerance']:.1e}"]]), "",
                 "The OpenVINO-vs-float64 error is the float32 round-off floor any f32 implementation reaches.", ""]


def _fallbacks_md(inp: Inputs, variants: list[Variant]) -> list[str]:
    records = []
    for v in variants:
        info = inp.infos[v.id]
        records.append((v.stage("evaluate"), info.generation_parity))
        records += [(v.stage("evaluate"), r) for r in info.feature_parity.values()]
    if inp.distill is not None:
        records.append(("distill_pool", inp.distill.renderer_parity))
    lines = [f"- `{stage}`, {r['what']}: {r['fallback_reason']}; ran on {r['runtime']}"
             for stage, r in records if r.get("fallback_reason")]
    return ["## Runtime fallbacks", "",
            "Every runtime choice made with `auto` is checked against PyTorch first; a fallback is listed here.", ""] \
        + (list(dict.fromkeys(lines)) or ["none"]) + [""]


def _levels_cell(levels: dict[str, int] | None) -> str:
    """'±127: 10 %, ±15: 90 %': the share of a pruned file's stored targeted weights at each int8 level count."""
    total = sum((levels or {}).values())
    if not total:
        return "-"
    return ", ".join(f"±{k}: {100 * n / total:.0f} %" for k, n in sorted(levels.items(), key=lambda kv: -int(kv[0])))


def build_report(params: dict, paths: Paths) -> dict:
    """Write every report output under paths.reports; returns {figure name: (drawn, caption or reason)}.

    params: the eval, report, prune and quantize sections."""
    eval_p, report_p, prune_p = params["eval"], params["report"], params["prune"]
    out = paths.reports
    variants: list[Variant] = variants_from_params(report_p["variants"], prune_p["amounts"])
    inp = read_inputs(variants, paths)
    rows = collect(inp)
    extra = {"prune_targets": prune_p["targets"],
             "prune_recipe": " / ".join(str(prune_p[k]) for k in
                                          ("method", "allocation", "recovery", "targets", "values")),
             "int8_error_ratio": prune_p["int8_error_ratio"],
             "calibration": params["quantize"]["calibration_samples"]}
    p = protocol_from(eval_p, inp, extra)
    fd, kid = p["fd_key"], p["kid_key"]
    has_fid = any(r.get(FID_KEY) is not None for r in rows) and fd != FID_KEY

    # CSVs: one row per variant, plus the plot data for `dvc plots diff`.
    columns = list(dict.fromkeys(k for r in rows for k in r))
    _write_csv(out / "metrics.csv", columns, [[r.get(c) for c in columns] for r in rows])
    sweep = [r for r in rows if r["kind"] in ("teacher", "pruned")]
    _write_csv(out / "plots" / "sweep.csv",
               ["variant", "amount", "sparsity_synthesis_pct", fd, f"{kid}_mean", "psnr_db", "ssim"],
               [[r["variant"], r["amount"] or 0.0, _pct(r["sparsity_synthesis"]), r.get(fd), r.get(f"{kid}_mean"),
                 r["psnr_db"], r["ssim"]] for r in sweep])
    latency = {v.id: inp.sizes[v.id].latency_ms for v in variants}
    _write_csv(out / "plots" / "latency.csv", ["label", "variant", "runtime", "latency_ms"],
               [[f"{v} / {rt}", v, rt, ms] for v, lat in latency.items() for rt, ms in lat.items()])
    layer_rows = [[v, i, name, s] for v, layers in inp.layers.items() for i, (name, s) in enumerate(layers.items())]
    _write_csv(out / "plots" / "layer_sparsity.csv", ["variant", "layer_index", "layer", "sparsity"], layer_rows)

    # Figures.
    strips = [(v.label, inp.strips[v.id], inp.evals[v.id].resolution) for v in variants]
    grid_cols = min(report_p["grid_columns"], eval_p["strip_columns"])
    seeds = list(range(eval_p["seed"], eval_p["seed"] + grid_cols))
    jobs = {
        "samples_grid": lambda path: figures.sample_grid(strips, grid_cols, seeds, path),
        "metric_vs_sparsity": lambda path: figures.metric_vs_sparsity(rows, p, path),
        "size_vs_metric": lambda path: figures.size_vs_metric(rows, p, path),
        "latency_by_runtime": lambda path: figures.latency_by_runtime(latency, path),
        "per_layer_sparsity": lambda path: figures.per_layer_sparsity(inp.layers, path),
    }
    captions = {}
    for name, job in jobs.items():
        path = out / "figures" / f"{name}.png"
        try:
            captions[name] = (True, job(path))
        except figures.NoData as e:
            path.unlink(missing_ok=True)   # A stale figure from an earlier run must not look current.
            captions[name] = (False, str(e))

    write_text(out / "report.md", "\n".join(_markdown(rows, inp, variants, p, has_fid, captions, params)))
    return captions


def _pct(x):
    return None if x is None else 100 * x


def _markdown(rows, inp: Inputs, variants, p: dict, has_fid: bool, captions: dict, params: dict) -> list[str]:
    fd, kid = p["fd_key"], p["kid_key"]

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
              f"`{kid}` x10^3"] + ([f"`{FID_KEY}`", f"`{FID_KID_KEY}` x10^3"] if has_fid else []) \
        + ["PSNR dB", "SSIM"]
    main = [[f"{r['variant']}" + (" (noise floor)" if r["kind"] == "teacher" else ""),
             _num(r["resolution"], ".0f"), _num(r["params"], ",.0f"), _num(r["nonzeros"], ",.0f"),
             _num(r["bytes"], ".2f", 1e-6, " MB"), _num(r["macs"], ".2f", 1e-9, " G"), latency(r),
             _num(r.get(fd), ".4g"), kid_cell(r, kid)]
            + ([_num(r.get(FID_KEY), ".4g"), kid_cell(r, FID_KID_KEY)] if has_fid else [])
            + [psnr(r), _num(r["ssim"], ".4f")] for r in rows]
    sweep_header = ["amount", "sparsity: pruned tensors", "synthesis net", "whole generator",
                    "by layer kind (allocation)", "non-zeros", "dense", "on disk", "int8 levels per row",
                    f"`{fd}`", f"`{kid}` x10^3", "PSNR dB", "SSIM"]
    sweep_rows = [[_num(r["amount"] or 0.0, "g"), _num(r["sparsity_pruned"], ".2f", 100, " %"),
                   _num(r["sparsity_synthesis"], ".2f", 100, " %"), _num(r["sparsity_all"], ".2f", 100, " %"),
                   ", ".join(f"{g} {100 * x:.0f} %" for g, x in (r.get("group_sparsity") or {}).items()) or "-",
                   _num(r["nonzeros"], ",.0f"),
                   _num(r["bytes_dense"], ".2f", 1e-6, " MB"), _num(r["bytes"], ".2f", 1e-6, " MB"),
                   _levels_cell(r.get("int8_levels")),
                   _num(r.get(fd), ".4g"), kid_cell(r, kid), psnr(r), _num(r["ssim"], ".4f")]
                  for r in rows if r["kind"] in ("teacher", "pruned")]
    student = next((r for r in rows if r["kind"] == "student"), None)

    def seconds(info):
        parts = ("load", "generate_and_features", "metrics")
        return " / ".join(_num(info.seconds.get(k), ".0f") for k in parts)

    throughput = []
    for v in variants:
        info = inp.infos[v.id]
        throughput.append([v.id, info.generation_parity["runtime"],
                           _num(info.generation.get("images_per_s"), ".2f")
                           + (" (eval_reference)" if info.is_teacher else ""),
                           _num(info.generation_parity.get("max_abs"), ".1e"),
                           "reused" if info.is_teacher else _num(info.feature_images_per_s, ".1f"), seconds(info)])

    md = [
        "# MobileStyleGAN compression study: results",
        "",
        "Generated by `dvc repro report` from the artifacts under `metrics/` and `reports/`; do not edit by hand. "
        "Every number in the variant tables was measured by this pipeline on the teacher of stage fetch_teacher and "
        "its variants. The only numbers not measured here are the earlier study's and the MobileStyleGAN paper's, "
        "in the comparison table's \"theirs\" column, where they are labelled as their published constants.",
        "",
        "## How the quality numbers were measured",
        "",
        _protocol_md(p, _floors(rows)),
        "",
        "## All variants",
        "",
        f"Quality columns: N = {p['n']}, reference = teacher samples (disjoint seeds), space as named. `on disk` is "
        "the size of the variant's deployable file; `non-zeros` counts stored weights that are not zero (for the "
        "int8 rows: of the float model that was quantized); latency is the fastest runtime measured by the "
        "variant's own account run (for int8 rows: on the runtime its quality was measured on), batch 1; every "
        "runtime is in the latency figure, and ratios within one run are in the Latency section.",
        "",
        _md_table(header, main),
        "",
    ]
    if student:
        md += [f"The student (and its int8 model, student-int8) runs at {student['native_resolution']} px: its "
               f"rows compare it with the teacher downsampled to {student['resolution']} px on the same latents; "
               f"its noise floor at that resolution is `{fd}` = {_num(student.get('floor_' + fd), '.4g')}.", ""]
    md += _latency_md(inp, variants)
    if sweep_rows:
        md += ["## Pruning sweep", "",
               f"Post-training pruning of prune.base at each `prune.amounts` entry (amount 0 = the teacher, its own zeros "
               f"counted; prune.method / allocation / recovery / targets / values = {p['prune_recipe']}). Sparsity is the share of zero "
               "weights in the pruned tensors, in the synthesis network (the earlier study's denominator) and in the "
               "whole generator (mapping network included); `dense` is the file size with the zeros stored, `on "
               "disk` the sparse file written; `int8 levels per row` the share of the pruned tensors' stored weights "
               f"at each code range (prune.int8_error_ratio = {p['int8_error_ratio']:g}: a layer's rounding may add "
               "that fraction to the output error its pruning left; the mapping network and the noise maps are not "
               "counted there).", "",
               _md_table(sweep_header, sweep_rows), ""]
    md += _int8_md(inp, variants, params["quantize"]["engine"])
    md += _distill_md(inp)
    md += _parity_md(inp)
    md += _fallbacks_md(inp, variants)
    md += ["## Earlier study vs ours", "",
           "The earlier EdgeStyleGAN study's and the MobileStyleGAN paper's published numbers (constants, not "
           "measured here) next to ours, with the reason for each difference (facts from reading that study's "
           "code). Each row names the protocol of both numbers.", "",
           _md_table(EARLIER_HEADER, [list(r) for r in comparison_rows(rows, inp.sizes.get("teacher"), p)]),
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
           "the stage ran, so they reflect the machine's load at that time.", "",
           "## Files", "", "- `reports/metrics.csv`: every column above, one row per variant.",
           "- `reports/plots/*.csv`: the data behind the figures (`dvc plots diff` reads them).",
           "- `reports/eval/<variant>.png`: each variant's sample strip; `reports/eval/<variant>.json`: its protocol "
           "and timings; `metrics/size/<variant>.json`: its size, MACs and latency record.", ""]
    return md
