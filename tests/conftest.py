import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def tiny_config():
    from edgestylegan.models.mobilestylegan import GeneratorConfig

    return GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32, 16))


@pytest.fixture
def tiny_generator(tiny_config):
    from edgestylegan.models.mobilestylegan import Generator

    torch.manual_seed(0)
    gen = Generator(tiny_config).eval()
    gen.estimate_w_avg(256, 0)
    return gen


@pytest.fixture(scope="session")
def venv_env():
    """Environment in which `python` and `dvc` resolve to this interpreter's environment."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    return env


@pytest.fixture
def perturbed_feature_openvino(monkeypatch):
    """Every OpenVINO feature trunk (metrics.features) replaced by its PyTorch module plus 0.01: a runtime that
    compiles but does not match."""
    from edgestylegan.metrics import features as feat

    def compile_perturbed(module, example):
        return lambda x: [module(torch.from_numpy(x)).detach().numpy() + 0.01]

    monkeypatch.setattr(feat, "openvino_module", compile_perturbed)
    feat.get_extractor.cache_clear()
    yield
    feat.get_extractor.cache_clear()
