import functools
import hashlib
import http.server
import subprocess
import sys
import threading

import pytest
import yaml

from edgestylegan.artifacts.teacher import TeacherRecord
from edgestylegan.config import ParamsError, validate
from edgestylegan.errors import UserError
from edgestylegan.io.checkpoint import load_generator, save_generator
from edgestylegan.io.download import DownloadError, fetch
from edgestylegan.io.teacher import materialize_teacher
from edgestylegan.paths import Paths
from edgestylegan.pipeline import teacher as teacher_stage


@pytest.fixture
def http_server(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _teacher_params(**kw):
    teacher = {"parity_seeds": [0], "sample_seeds": [0], "w_avg_seed": 0, **kw}
    return validate({"teacher": teacher}, ["teacher"])["teacher"]


def test_url_source_with_correct_hash(tmp_path, tiny_generator, http_server, monkeypatch):
    save_generator(tiny_generator, tmp_path / "t.safetensors")
    digest = hashlib.sha256((tmp_path / "t.safetensors").read_bytes()).hexdigest()
    url = f"{http_server}/t.safetensors"
    gen, info = materialize_teacher(_teacher_params(source="url", url=url, sha256=digest), tmp_path / "dl")
    assert gen.config == tiny_generator.config
    assert info["sha256"] == digest
    assert (tmp_path / "dl" / "t.safetensors").read_bytes() == (tmp_path / "t.safetensors").read_bytes()


def test_url_source_with_wrong_hash_fails_clearly(tmp_path, tiny_generator, http_server):
    save_generator(tiny_generator, tmp_path / "t.safetensors")
    url = f"{http_server}/t.safetensors"
    with pytest.raises(DownloadError) as err:
        fetch(url, "0" * 64, tmp_path / "dl" / "t.safetensors")
    message = str(err.value)
    assert "sha256 mismatch" in message and url in message and "0" * 64 in message and "by hand" in message
    assert not (tmp_path / "dl" / "t.safetensors").exists()


def test_download_resumes_a_partial_file(tmp_path, http_server):
    payload = bytes(range(256)) * 4096
    (tmp_path / "blob.bin").write_bytes(payload)
    dest = tmp_path / "dl" / "blob.bin"
    dest.parent.mkdir()
    dest.with_name("blob.bin.part").write_bytes(payload[:1000])
    fetch(f"{http_server}/blob.bin", hashlib.sha256(payload).hexdigest(), dest)
    assert dest.read_bytes() == payload


def test_file_url_and_offline_errors(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    assert fetch((tmp_path / "a.bin").as_uri(), digest, tmp_path / "out" / "a.bin").read_bytes() == b"abc"
    with pytest.raises(DownloadError, match="cannot download http://127.0.0.1:9/x"):
        fetch("http://127.0.0.1:9/x", digest, tmp_path / "out" / "x.bin", timeout=2)


def test_file_source(tmp_path, tiny_generator):
    save_generator(tiny_generator, tmp_path / "t.safetensors")
    gen, _ = materialize_teacher(_teacher_params(source="file", path=str(tmp_path / "t.safetensors")), tmp_path)
    assert gen.resolution == 32


def _write_params(folder, **teacher):
    (folder / "params.yaml").write_text(yaml.safe_dump({"teacher": {"sample_seeds": [0, 1], **teacher}}))
    return folder / "params.yaml"


def test_run_fetch_teacher_from_a_file(tmp_path, tiny_generator):
    save_generator(tiny_generator, tmp_path / "t.safetensors")
    params = _write_params(tmp_path, source="file", path=str(tmp_path / "t.safetensors"))
    record = teacher_stage.run_fetch_teacher(params, tmp_path / "project")
    paths = Paths(tmp_path / "project")
    assert TeacherRecord.read(paths.teacher_metrics) == record and record.parity is None
    stored = load_generator(paths.teacher_model)
    assert record.params == {"mapping": sum(p.numel() for p in stored.mapping.parameters()),
                             "synthesis": sum(p.numel() for p in stored.synthesis.parameters())}
    assert record.resolution == stored.resolution == 32 and paths.teacher_samples.is_file()


def test_parity_gate_uses_teacher_parity_tolerance(tmp_path, monkeypatch):
    measured = {"max_abs": 3e-4, "mean_abs": 1e-6, "mapping_max_abs": 1e-6, "openvino_vs_float64_max_abs": 1e-4}
    monkeypatch.setattr(teacher_stage, "ir_parity", lambda gen, seeds, truncation: measured)
    params = _write_params(tmp_path, parity_seeds=[0], w_avg_samples=8)   # schema default tolerance 2e-4 < 3e-4
    with pytest.raises(UserError, match="teacher.parity_tolerance"):
        teacher_stage.run_fetch_teacher(params, tmp_path)
    assert not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()
    record = teacher_stage.run_fetch_teacher(_write_params(tmp_path, parity_seeds=[0], w_avg_samples=8,
                                                           parity_tolerance=4e-4), tmp_path)
    assert record.parity["max_abs"] == 3e-4 and record.parity["tolerance"] == 4e-4 and record.parity["num_latents"] == 1


@pytest.mark.parametrize("teacher, message", [
    ({"source": "torrent"}, "teacher.source = 'torrent' is not a known option"),
    ({"source": "url", "url": "http://x/y"}, "teacher.sha256"),
    ({"source": "file"}, "teacher.path"),
    ({"parity_tolerance": 0}, "teacher.parity_tolerance"),
    ({"colour": "blue"}, "unknown key(s) teacher.colour"),
])
def test_bad_teacher_params(teacher, message):
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate({"teacher": teacher}, ["teacher"])


def test_stage_exits_2_without_output_on_unknown_source(tmp_path, root, venv_env):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"teacher": {"source": "torrent"}}))
    result = subprocess.run([sys.executable, str(root / "stages/fetch_teacher.py"), "--params", "params.yaml"],
                            cwd=tmp_path, env=venv_env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "teacher.source = 'torrent' is not a known option" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()
