"""The evaluation protocol end to end on a tiny generator through the pipeline functions: reference sets, a perfect
copy of the teacher scores the noise floor, a perturbed variant scores worse, a lower-resolution variant gets its own
floor, the model file follows from the variant id, and the OpenVINO runtime's parity policy."""
import importlib.util
import json

import pytest
import torch
import yaml

from edgestylegan.artifacts.evaluation import EvalInfo, EvalRecord
from edgestylegan.config import SCHEMA, validate
from edgestylegan.errors import UserError
from edgestylegan.io.checkpoint import load_generator, save_generator
from edgestylegan.metrics import generation
from edgestylegan.metrics.evaluate import REFERENCE_KEYS, EvalConfig, Reference
from edgestylegan.metrics.features import extract_features
from edgestylegan.metrics.fidelity import frechet_distance
from edgestylegan.metrics.generation import downsample_u8, generate_eval_images
from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig, latents_from_seeds
from edgestylegan.paths import Paths
from edgestylegan.pipeline.evaluate import run_eval_reference, run_evaluate, variant_model

CFG = dict(seed=10, reference_seed=100, num_samples=12, truncation=1.0, resolution=32, batch_size=4,
           feature_batch_size=8, runtime="torch", parity_tolerance=2e-3, feature_spaces=["enl0"],
           inception_weights="", paired_samples=12, reference="teacher", kid_subsets=5, kid_subset_size=6, precision_recall=True,
           strip_columns=4)


def _cfg(**kw) -> EvalConfig:
    return EvalConfig.from_params(validate({"eval": {**CFG, **kw}}, ["eval"])["eval"])


def _params(folder, **eval_kw):
    """folder/params.yaml with CFG updated by `eval_kw` (and quantize.engine = onnxruntime)."""
    (folder / "params.yaml").write_text(yaml.safe_dump({"eval": {**CFG, **eval_kw}, "quantize": {"engine": "onnxruntime"}}))
    return folder / "params.yaml"


def _sane_tiny_generator() -> Generator:
    """conftest's tiny generator with its output head rescaled so images are not saturated (std ~ 0.4)."""
    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32, 16))).eval()
    gen.estimate_w_avg(256, 0)
    head = gen.synthesis.blocks[-1].to_img.conv.conv
    with torch.no_grad():
        scale = gen(latents_from_seeds(range(16), 32)).std() / 0.4
        head.weight.div_(scale)
        head.bias.div_(scale)
    return gen


@pytest.fixture
def tiny_generator():
    return _sane_tiny_generator()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project root with the teacher, an exact copy of it (another file), a perturbed variant and the reference."""
    root = tmp_path_factory.mktemp("eval")
    paths = Paths(root)
    gen = _sane_tiny_generator()
    save_generator(gen, paths.teacher_model)
    save_generator(gen, paths.student_model, {"note": "a copy of the teacher under another name"})
    with torch.no_grad():
        for p in gen.synthesis.parameters():
            p.mul_(1 + 0.2 * torch.randn_like(p))
        gen.synthesis.blocks[-1].to_img.conv.conv.bias.add_(0.5)   # A colour shift FD must see.
    save_generator(gen, paths.pruned_model(0.2))
    run_eval_reference(_params(root), root)
    return root


def test_eval_config_is_the_schema_section():
    assert {f for f in EvalConfig.__dataclass_fields__} == set(SCHEMA["eval"])
    assert set(REFERENCE_KEYS) < set(SCHEMA["eval"])
    section = validate({"eval": CFG}, ["eval"])["eval"]
    with pytest.raises(TypeError, match="bogus"):
        EvalConfig.from_params({**section, "bogus": 1})


def test_a_copy_of_the_teacher_scores_the_noise_floor_and_a_variant_scores_worse(project):
    paths = Paths(project)
    reference = Reference(paths.eval_reference, _cfg())
    assert reference.resolution == 32 and reference.paired_images(32).shape == (12, 3, 32, 32)
    assert not {"images_main", "images_ref"} & set(reference.data.files)   # Only features and the paired subset.
    assert set(reference.meta.config) == set(REFERENCE_KEYS)

    teacher, info_t = run_evaluate("teacher", project / "params.yaml", project)
    copy, info_c = run_evaluate("student", project / "params.yaml", project)
    assert info_t.is_teacher and not info_c.is_teacher   # The copy is regenerated and re-featurised ...
    assert copy.paired["identical_images"] == 12 and copy.paired["psnr_db"] is None
    for key in ("fd_enl0", "precision_enl0", "recall_enl0"):   # ... and lands on the floor, as the teacher does.
        assert copy.scores[key] == pytest.approx(copy.noise_floor[key], rel=1e-5, abs=1e-6)
        assert teacher.scores[key] == pytest.approx(copy.scores[key], rel=1e-5, abs=1e-6)
    assert copy.scores["kid_enl0"]["mean"] == pytest.approx(copy.noise_floor["kid_enl0"]["mean"], abs=1e-8)

    variant, info_v = run_evaluate("pruned-0.2", project / "params.yaml", project)
    assert info_v.generation_parity["runtime"] == "pytorch-cpu" and info_v.generation_parity["max_abs"] is None
    assert variant.noise_floor == teacher.noise_floor
    assert variant.scores["fd_enl0"] > 2 * teacher.scores["fd_enl0"]
    assert variant.paired["psnr_db"] < 60 and variant.paired["ssim"] < 1

    written = json.loads(paths.eval_metrics("pruned-0.2").read_text())   # Per-space scores at the top level.
    assert {"fd_enl0", "kid_enl0", "precision_enl0", "recall_enl0"} <= set(written)
    assert EvalRecord.read(paths.eval_metrics("pruned-0.2")) == variant
    assert EvalInfo.read(paths.eval_info("pruned-0.2")) == info_v and paths.eval_strip("pruned-0.2").is_file()
    json.dumps(written, allow_nan=False)


def test_lower_resolution_variant_gets_its_own_noise_floor(tmp_path, project):
    paths = Paths(project)
    small = Generator(GeneratorConfig(style_dim=32, mapping_layers=2, resolution=16, channels=(32, 32, 32)))
    root = tmp_path
    save_generator(small.eval(), Paths(root).student_model)
    (root / "data" / "eval").mkdir(parents=True)
    (root / "data" / "eval" / "reference.npz").symlink_to(paths.eval_reference)
    with pytest.raises(UserError, match="teacher.safetensors does not exist"):   # The floor: the teacher at 16 px.
        run_evaluate("student", _params(root), root)
    Paths(root).teacher_model.write_bytes(paths.teacher_model.read_bytes())
    m, info = run_evaluate("student", _params(root), root)
    assert m.resolution == 16 and m.native_resolution == 16 and m.paired["psnr_db"] is not None
    # The floor is the teacher's two sets downsampled to 16 px and featurised again, not the stored 32-px features:
    # computed here in memory, the way the stage did before it streamed.
    teacher = load_generator(paths.teacher_model)
    sets, _, _ = generate_eval_images(teacher, {"main": _cfg().seeds(), "ref": _cfg().reference_seeds()}, 1.0, 32, 4,
                                      "torch", 2e-3)
    main16 = extract_features(downsample_u8(sets["main"], 16), "enl0", 8)
    ref = Reference(paths.eval_reference, _cfg())
    assert not torch.allclose(main16, ref.features("main", "enl0"), atol=1e-2)
    expected = frechet_distance(main16, extract_features(downsample_u8(sets["ref"], 16), "enl0", 8))
    assert m.noise_floor["fd_enl0"] == pytest.approx(expected, rel=1e-5)
    Paths(root).teacher_model.write_bytes(Paths(project).pruned_model(0.2).read_bytes())
    with pytest.raises(UserError, match="not the teacher"):
        run_evaluate("student", _params(root), root)


def test_variant_ids_name_their_model_files(tmp_path):
    paths = Paths(tmp_path)
    assert variant_model("teacher", paths) == tmp_path / "models" / "teacher.safetensors"
    assert variant_model("pruned-0.4", paths) == paths.pruned_model(0.4)
    assert variant_model("int8", paths, "openvino") == tmp_path / "models" / "quantized" / "int8.xml"
    assert variant_model("int8", paths, "onnxruntime") == tmp_path / "models" / "quantized" / "int8.onnx"
    assert variant_model("student-int8", paths, "onnxruntime") == paths.int8_model("onnxruntime", "student")
    for bad in ("pruned-x", "pruned-.4", "int4"):
        with pytest.raises(UserError, match="unknown variant"):
            variant_model(bad, paths)


def test_int8_follows_quantize_engine(project):
    # params say quantize.engine = onnxruntime: the int8 variant is int8.onnx, absent here.
    with pytest.raises(UserError, match="int8.onnx"):
        run_evaluate("int8", project / "params.yaml", project)


def test_reference_made_with_other_params_is_refused(project):
    with pytest.raises(UserError, match="eval.seed"):
        Reference(Paths(project).eval_reference, _cfg(seed=11))


def test_openvino_runtime_matches_pytorch(tiny_generator):
    seeds = list(range(6))
    ref, _, torch_parity = generate_eval_images(tiny_generator, {"a": seeds}, 1.0, 32, 4, "torch", 2e-3)
    ov, _, parity = generate_eval_images(tiny_generator, {"a": seeds}, 1.0, 32, 4, "openvino", 2e-3)
    assert torch_parity.runtime == "pytorch-cpu" and torch_parity.max_abs is None
    assert parity.runtime == "openvino-cpu-f32" and parity.max_abs < 2e-3 and parity.fallback_reason is None
    assert (ov["a"].int() - ref["a"].int()).abs().max() <= 1   # At most one uint8 level apart.
    assert not tiny_generator.training


@pytest.fixture
def perturbed_openvino(monkeypatch):
    """OpenVINO's generator replaced by PyTorch's output plus 0.05: a runtime that converts but does not match."""
    def convert_perturbed(gen):
        return lambda z, truncation: gen(z, truncation=truncation) + 0.05

    monkeypatch.setattr(generation, "openvino_generator", convert_perturbed)


def test_parity_failure_falls_back_under_auto_and_is_recorded(tmp_path, project, perturbed_openvino):
    root = tmp_path
    save_generator(_sane_tiny_generator(), Paths(root).student_model, {"note": "copy"})
    (root / "data" / "eval").mkdir(parents=True)
    (root / "data" / "eval" / "reference.npz").symlink_to(Paths(project).eval_reference)
    m, info = run_evaluate("student", _params(root, runtime="auto"), root)
    parity = info.generation_parity
    assert parity["runtime"] == "pytorch-cpu" and parity["requested"] == "auto"
    assert parity["max_abs"] == pytest.approx(0.05, rel=1e-3)
    assert "differs from pytorch-cpu" in parity["fallback_reason"]
    assert m.paired["identical_images"] == 12   # The images are PyTorch's.
    assert EvalInfo.read(Paths(root).eval_info("student")).generation_parity == parity


def test_parity_failure_is_an_error_when_openvino_was_asked_for(tiny_generator, perturbed_openvino):
    with pytest.raises(UserError, match="eval.runtime = openvino was asked for explicitly.*eval.parity_tolerance"):
        generate_eval_images(tiny_generator, {"a": [0, 1]}, 1.0, 32, 4, "openvino", 2e-3)


def test_stage_cli_writes_metrics_info_and_strip(tmp_path, project, root):
    spec = importlib.util.spec_from_file_location("stage_evaluate", root / "stages" / "evaluate.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    paths = Paths(tmp_path)
    (paths.root / "models" / "pruned").mkdir(parents=True)
    (paths.root / "models" / "teacher.safetensors").write_bytes(Paths(project).teacher_model.read_bytes())
    paths.pruned_model(0.2).write_bytes(Paths(project).pruned_model(0.2).read_bytes())
    args = ["--params", str(_params(tmp_path)), "--root", str(tmp_path)]
    stage.main([*args, "reference"])
    stage.main([*args, "variant", "--variant", "pruned-0.2"])
    assert EvalRecord.read(paths.eval_metrics("pruned-0.2")).scores["fd_enl0"] > 0
    assert EvalInfo.read(paths.eval_info("pruned-0.2")).variant == "pruned-0.2"
    assert paths.eval_strip("pruned-0.2").is_file()
    _params(tmp_path, kid_subset_size=50)
    with pytest.raises(SystemExit) as e:
        stage.main([*args, "variant", "--variant", "pruned-0.2"])
    assert e.value.code == 2


def test_precomputed_statistics_reference(tmp_path, project):
    import numpy as np

    from edgestylegan.metrics.fidelity import feature_statistics

    ref = Reference(Paths(project).eval_reference, _cfg())
    stats = feature_statistics(ref.features("ref", "enl0"))
    np.savez(tmp_path / "stats.npz", **stats)   # clean-fid's layout, here in the enl0 space (1280-d).
    m, info = run_evaluate("teacher", _params(tmp_path, reference=str(tmp_path / "stats.npz")), project)
    assert m.scores["fd_enl0_vs_stats"] == pytest.approx(m.scores["fd_enl0"], rel=1e-6)   # Same set, as statistics.
    assert info.reference_stats["space"] == "enl0"
    np.savez(tmp_path / "inception.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(UserError, match="add `inception`"):
        run_evaluate("pruned-0.2", _params(tmp_path, reference=str(tmp_path / "inception.npz")), project)
