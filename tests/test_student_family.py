"""The student-family benchmark's member definitions and input checks (the benchmark itself distills for minutes:
scripts/student_family.py)."""
import shutil

import pytest

from edgestylegan.config import read_yaml, validate
from edgestylegan.errors import UserError
from edgestylegan.models.mobilestylegan import GeneratorConfig
from edgestylegan.pipeline.student_family import DEFAULT_MEMBERS, FAMILY, member_params, run_student_family


def test_every_member_is_a_valid_student_and_distill_section():
    raw = read_yaml("params.yaml")
    for name in FAMILY:
        validate(member_params(raw, name), ["student", "distill"], name)


def test_trunk_trained_blaze_trains_every_layer_and_runs_only_when_named():
    raw = read_yaml("params.yaml")
    member = member_params(raw, "blaze, trunk trained")
    assert member["distill"]["lr_pretrained"] > 0 and member["student"]["all_heads"] is True
    assert member["distill"]["perceptual"] == "enl0" and member["eval"] == raw["eval"]
    assert "blaze, trunk trained" not in DEFAULT_MEMBERS
    assert member_params(raw, "blaze")["distill"] == raw["distill"]


def test_last_block_channels_narrow_only_the_last_block():
    raw = read_yaml("params.yaml")
    student, section = raw["student"], member_params(raw, "blaze, last block 256 ch")["student"]
    config = GeneratorConfig(resolution=section["resolution"], arch="blaze", channels=section["channels"])
    assert config.used_channels[-1] == 256
    assert config.used_channels[:-1] == tuple(student["channels"][:config.num_blocks])


def test_unknown_student_is_refused(tmp_path):
    with pytest.raises(UserError, match="choose from"):
        run_student_family(["tiny"], "params.yaml", tmp_path)


@pytest.mark.parametrize("stem", ["", "../students", ".hidden"])
def test_an_output_stem_that_is_not_a_plain_name_is_refused(tmp_path, stem):
    with pytest.raises(UserError, match="plain file stem"):
        run_student_family(["blaze"], "params.yaml", tmp_path, stem)
    assert not any(tmp_path.iterdir())


def test_missing_inputs_are_named_and_nothing_is_written(tmp_path):
    shutil.copy("params.yaml", tmp_path / "params.yaml")
    with pytest.raises(UserError, match=r"teacher\.safetensors.*dvc repro distill_pool eval_reference"):
        run_student_family(["blaze"], tmp_path / "params.yaml", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
