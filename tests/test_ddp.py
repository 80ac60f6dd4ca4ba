"""Data-parallel distillation under torchrun (gloo, CPU): two ranks of batch B apply the same gradients as one
process of batch 2B on the same global batch (tests/ddp_grads.py runs the real training loop in both)."""
import subprocess
import sys

import torch

SCRIPT = "tests/ddp_grads.py"


def _run(cmd, root, env):
    result = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def _max_rel(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-30)) for k in b)


def test_two_rank_gradients_equal_one_process_on_the_global_batch(tmp_path, root, venv_env):
    env = {**venv_env, "OMP_NUM_THREADS": "1"}
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", SCRIPT,
          str(tmp_path / "ddp"), "--batch-size", "4"], root, env)
    _run([sys.executable, SCRIPT, str(tmp_path / "one"), "--batch-size", "8"], root, env)
    _run([sys.executable, SCRIPT, str(tmp_path / "half"), "--batch-size", "4", "--steps", "1"], root, env)
    rank0, rank1 = (torch.load(tmp_path / "ddp" / f"grads_rank{r}_of2.pt", weights_only=True) for r in (0, 1))
    one = torch.load(tmp_path / "one" / "grads_rank0_of1.pt", weights_only=True)
    half = torch.load(tmp_path / "half" / "grads_rank0_of1.pt", weights_only=True)

    assert len(one) == len(rank0) == len(rank1) == 2  # One generator step per training step (no GAN).
    for step, (g0, g1, g) in enumerate(zip(rank0, rank1, one)):
        assert set(g0) == set(g1) == set(g) and len(g) > 10
        for name in g:
            assert torch.equal(g0[name], g1[name]), (step, name)  # Every rank applies the same all-reduced tensor.
            assert torch.allclose(g0[name], g[name], rtol=1e-5, atol=1e-6 * float(g[name].abs().max())), (step, name)
    # Without the all-reduce a rank would apply its own half batch's gradient: far from the global one.
    assert _max_rel(half[0], one[0]) > 1e-2 and _max_rel(rank0[0], one[0]) < 1e-5
