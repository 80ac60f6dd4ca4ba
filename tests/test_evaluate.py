"""The evaluation protocol end to end on a tiny generator: reference sets, teacher = noise floor, a perturbed
variant, a lower-resolution variant, and the OpenVINO runtime's parity gate."""
import importlib.util
import json

import pytest
import torch
import yaml

from edgestylegan.errors import UserError
from edgestylegan.io.checkpoint import save_generator
from edgestylegan.metrics.evaluate import EvalConfig, Reference, build_reference, evaluate_variant
from edgestylegan.metrics.generation import generate_eval_images
from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig

CFG = dict(seed=10, reference_seed=100, num_samples=12, truncation=1.0, resolution=32, batch_size=4,
           feature_batch_size=8, runtime="torch", parity_tolerance=2e-3, feature_spaces=["enl0"],
           inception_weights="", reference="teacher", kid_subsets=5, kid_subset_size=6, precision_recall=True,
           strip_columns=4)


def _sane_tiny_generator() -> Generator:
    """conftest's tiny generator with its output head rescaled so images are not saturated (std ~ 0.4)."""
    from edgestylegan.models.mobilestylegan import latents_from_seeds

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
def built(tmp_path_factory):
    """teacher and perturbed variant checkpoints, and the reference file, made once for the module."""
    tmp = tmp_path_factory.mktemp("eval")
    gen = _sane_tiny_generator()
    save_generator(gen, tmp / "teacher.safetensors")
    with torch.no_grad():
        for p in gen.synthesis.parameters():
            p.mul_(1 + 0.2 * torch.randn_like(p))
        gen.synthesis.blocks[-1].to_img.conv.conv.bias.add_(0.5)   # A colour shift FD must see.
    save_generator(gen, tmp / "variant.safetensors")
    build_reference(tmp / "teacher.safetensors", EvalConfig.from_params(CFG), tmp / "reference.npz")
    return tmp / "teacher.safetensors", tmp / "variant.safetensors", tmp / "reference.npz"


@pytest.fixture
def files(built):
    return built[:2]


def test_teacher_is_the_noise_floor_and_a_variant_is_worse(built):
    teacher, variant, ref_path = built
    cfg = EvalConfig.from_params(CFG)
    reference = Reference(ref_path, cfg)
    assert reference.resolution == 32 and reference.images("ref", 32).shape == (12, 3, 32, 32)

    m_t, info_t, strip = evaluate_variant(teacher, ref_path, cfg)
    assert info_t["is_teacher"] and strip.shape == (4, 3, 32, 32)
    assert m_t["fd_enl0"] == pytest.approx(m_t["noise_floor"]["fd_enl0"])
    assert "psnr_db" not in m_t["paired"] and m_t["paired"]["identical_images"] == 12
    json.dumps(m_t, allow_nan=False)   # Numbers only, no inf/nan.

    m_v, info_v, _ = evaluate_variant(variant, ref_path, cfg)
    assert not info_v["is_teacher"] and info_v["generation"]["runtime"] == "pytorch-cpu"
    assert m_v["noise_floor"] == m_t["noise_floor"]
    assert m_v["fd_enl0"] > m_t["fd_enl0"] and m_v["paired"]["psnr_db"] < 60 and m_v["paired"]["ssim"] < 1


def test_lower_resolution_variant_gets_its_own_noise_floor(tmp_path, built):
    ref_path = built[2]
    cfg = EvalConfig.from_params(CFG)
    small = Generator(GeneratorConfig(style_dim=32, mapping_layers=2, resolution=16, channels=(32, 32, 32)))
    save_generator(small.eval(), tmp_path / "small.safetensors")
    m, info, _ = evaluate_variant(tmp_path / "small.safetensors", ref_path, cfg)
    assert m["resolution"] == 16 and m["native_resolution"] == 16 and info["resolution"] == 16
    assert m["noise_floor"]["fd_enl0"] >= 0 and "psnr_db" in m["paired"]


def test_reference_made_with_other_params_is_refused(built):
    _, variant, ref_path = built
    with pytest.raises(UserError, match="eval.seed"):
        evaluate_variant(variant, ref_path, EvalConfig.from_params({**CFG, "seed": 11}))


def test_openvino_runtime_matches_pytorch(tiny_generator):
    seeds = list(range(6))
    ref, _ = generate_eval_images(tiny_generator, {"a": seeds}, 1.0, 32, 4, runtime="torch")
    ov, info = generate_eval_images(tiny_generator, {"a": seeds}, 1.0, 32, 4, runtime="openvino")
    assert info["a"]["runtime"] == "openvino-cpu-f32" and info["a"]["parity_max_abs"] < 2e-3
    assert (ov["a"].int() - ref["a"].int()).abs().max() <= 1   # At most one uint8 level apart.
    assert not tiny_generator.training


def test_stage_cli_writes_metrics_info_and_strip(tmp_path, files, monkeypatch, root):
    teacher, variant = files
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"eval": CFG}))
    spec = importlib.util.spec_from_file_location("stage_evaluate", root / "stages" / "evaluate.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.chdir(tmp_path)
    stage.main(["reference", "--model", str(teacher), "--out", "data/eval/reference.npz"])
    stage.main(["variant", "--variant", "pruned-0.2", "--model", str(variant)])
    metrics = json.loads((tmp_path / "metrics/eval/pruned-0.2.json").read_text())
    assert {"fd_enl0", "kid_enl0", "paired", "noise_floor", "n"} <= set(metrics)
    assert json.loads((tmp_path / "reports/eval/pruned-0.2.json").read_text())["variant"] == "pruned-0.2"
    assert (tmp_path / "reports/eval/pruned-0.2.png").is_file()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"eval": {**CFG, "kid_subset_size": 50}}))
    with pytest.raises(SystemExit) as e:
        stage.main(["variant", "--variant", "x", "--model", str(variant)])
    assert e.value.code == 2


def test_precomputed_statistics_reference(tmp_path, built):
    import numpy as np

    from edgestylegan.metrics.fidelity import feature_statistics

    teacher, variant, ref_path = built
    cfg = EvalConfig.from_params(CFG)
    ref = Reference(ref_path, cfg)
    stats = feature_statistics(ref.features("ref", "enl0"))
    np.savez(tmp_path / "stats.npz", **stats)   # clean-fid's layout, here in the enl0 space (1280-d).
    with_stats = EvalConfig.from_params({**CFG, "reference": str(tmp_path / "stats.npz")})
    m, info, _ = evaluate_variant(teacher, ref_path, with_stats)
    assert m["fd_enl0_vs_stats"] == pytest.approx(m["fd_enl0"], rel=1e-6)   # Same reference set, as statistics.
    assert info["reference_stats"]["space"] == "enl0"
    np.savez(tmp_path / "inception.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(UserError, match="add `inception`"):
        evaluate_variant(variant, ref_path,
                         EvalConfig.from_params({**CFG, "reference": str(tmp_path / "inception.npz")}))
