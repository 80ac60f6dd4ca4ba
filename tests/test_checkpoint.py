import json

import pytest
import torch

from edgestylegan.io.checkpoint import CheckpointError, checkpoint_info, load_generator, save_generator
from edgestylegan.pipeline.loaders import load_model


def test_round_trip_is_exact(tmp_path, tiny_generator):
    path = tmp_path / "g.safetensors"
    save_generator(tiny_generator, path, {"source": "test"})
    loaded = load_generator(path)
    assert loaded.config == tiny_generator.config
    for (k, a), (_, b) in zip(tiny_generator.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert checkpoint_info(path) == {"source": "test"}
    assert load_model(path).resolution == 32


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_generator(path)


def test_foreign_safetensors_is_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "other"})
    with pytest.raises(CheckpointError, match="not an edgestylegan generator"):
        load_generator(path)


def test_config_mismatch_is_rejected(tmp_path, tiny_generator):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "g.safetensors"
    save_generator(tiny_generator, path)
    state = load_file(str(path))
    config = tiny_generator.config.to_dict() | {"channels": [32, 16, 32, 16]}
    save_file(state, str(path), metadata={"format": "edgestylegan.generator.v1", "config": json.dumps(config)})
    with pytest.raises(CheckpointError, match="shape"):
        load_generator(path)


def test_files_are_byte_identical_across_processes(tmp_path, root, venv_env):
    """safetensors writes its metadata map in per-process hash order; ours must not (DVC hashes the bytes)."""
    import subprocess
    import sys

    script = ("import sys, torch; from edgestylegan.io.atomic import write_safetensors; "
              "tensors = {'a': torch.arange(6.).reshape(2, 3), 'b': torch.ones(4, dtype=torch.int8)}; "
              "write_safetensors(sys.argv[1], tensors, "
              "{k: k * 3 for k in ('format', 'config', 'info', 'sparse', 'qparams', 'backend')})")
    paths = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for path in paths:
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=venv_env)
    assert len({p.read_bytes() for p in paths}) == 1
    from safetensors.torch import load_file, safe_open

    assert torch.equal(load_file(str(paths[0]))["a"], torch.arange(6.).reshape(2, 3))
    with safe_open(str(paths[0]), framework="pt") as f:
        assert f.metadata()["qparams"] == "qparamsqparamsqparams"
