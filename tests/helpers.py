"""Helpers shared by test modules (import as `from helpers import ...`; pytest puts tests/ on sys.path)."""
import runpy
import shutil
import subprocess
import sys

import yaml


def run_stage(root, name, *args):
    """Run stages/<name>.py in-process with argv; returns the exit code (0 when main() returned)."""
    old = sys.argv
    sys.argv = [name, *args]
    try:
        runpy.run_path(str(root / "stages" / f"{name}.py"), run_name="__main__")
        return 0
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = old


def run(cmd, cwd, env):
    """Run a command; fail the test with its output when it exits non-zero."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def dvc_project(tmp_path, root, env, overrides: dict, commit: bool = False):
    """A fresh git + DVC project in tmp_path with this repo's pipeline and params.yaml updated by `overrides`.

    Returns the params written. commit: also make an initial commit (dvclive needs one)."""
    for item in ("dvc.yaml", "params.yaml"):
        shutil.copy(root / item, tmp_path / item)
    for folder in ("stages", "src"):
        shutil.copytree(root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], tmp_path, env)
    run(["dvc", "init", "-q"], tmp_path, env)
    if commit:
        run(["git", "add", "-A"], tmp_path, env)
        run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "init"], tmp_path, env)
    return params


def unit_variance_generator(config, seed: int = 0, samples: int = 16):
    """A randomly initialised `Generator` whose every dense conv is rescaled, in forward order, so that its output has
    unit standard deviation on `samples` latents (LSUV, Mishkin & Matas 2016): upstream's initialisation is meant for
    training and its untrained images reach 1e10 at 64 px, which no stage downstream can fit or quantize."""
    import torch
    from torch import nn

    from edgestylegan.models.mobilestylegan import Generator

    torch.manual_seed(seed)
    gen = Generator(config).eval()
    z = torch.randn(samples, config.style_dim, generator=torch.Generator().manual_seed(seed))
    order: list[nn.Conv2d] = []
    stds: dict = {}

    def record(module, inputs, output):
        order.append(module)

    def measure(module, inputs, output):
        stds[module] = output.std()

    hooks = [m.register_forward_hook(record)
             for m in gen.synthesis.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    with torch.no_grad():
        gen(z, 1.0)
        for hook in hooks:
            hook.remove()
        for conv in order:
            hook = conv.register_forward_hook(measure)
            gen(z, 1.0)
            hook.remove()
            conv.weight.div_(stds[conv])
            if conv.bias is not None:
                conv.bias.div_(stds[conv])
    gen.estimate_w_avg(256, seed)
    return gen
