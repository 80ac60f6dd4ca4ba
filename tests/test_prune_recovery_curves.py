"""The recovery-curves benchmark's input checks (the benchmark itself prunes and evaluates for minutes: scripts/)."""
import shutil

import pytest

from edgestylegan.errors import UserError
from edgestylegan.pipeline.prune_recovery_curves import run_prune_recovery_curves


def test_unknown_recovery_is_refused(tmp_path):
    with pytest.raises(UserError, match="choose from"):
        run_prune_recovery_curves(["obs"], "params.yaml", tmp_path)


def test_missing_inputs_are_named_and_nothing_is_written(tmp_path):
    shutil.copy("params.yaml", tmp_path / "params.yaml")
    with pytest.raises(UserError, match=r"teacher\.safetensors.*dvc repro eval_reference prune_profile"):
        run_prune_recovery_curves(["none"], tmp_path / "params.yaml", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
