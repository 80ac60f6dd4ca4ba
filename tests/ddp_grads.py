"""Run the real distillation loop (`distill.trainer.train`) for a few steps of a tiny scratch student and save the
gradient of every trainable tensor as each optimiser step sees it (after the cross-rank all-reduce).

    python tests/ddp_grads.py OUT --batch-size 8                                   # one process, global batch 8
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_grads.py OUT --batch-size 4

Every step's global batch is fixed (GlobalBatches): rank r of W takes rows [r * B, (r + 1) * B), so W ranks of
batch B see exactly the one-process batch of W * B. Launched by tests/test_ddp.py.
"""
import argparse
from pathlib import Path

import torch
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_pre_hook

from edgestylegan.config import validate
from edgestylegan.distill.students import build_student, tame_new_modulations
from edgestylegan.distill.targets import downsample, latents
from edgestylegan.distill.trainer import TrainConfig, init_distributed, train
from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig

STYLE_DIM, GLOBAL_BATCH = 16, 8
TEACHER = GeneratorConfig(style_dim=STYLE_DIM, mapping_layers=2, resolution=32, channels=(16, 16, 16, 16))
STUDENT = GeneratorConfig(style_dim=STYLE_DIM, mapping_layers=2, resolution=16, channels=(16, 16, 16), all_heads=True)


class GlobalBatches:
    """Step s: GLOBAL_BATCH latents (seed s) and the teacher's images of them; each rank takes its rows."""

    def __init__(self, teacher: Generator):
        self.teacher = teacher

    @torch.no_grad()
    def __call__(self, step: int, rank: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = latents(GLOBAL_BATCH, step, STYLE_DIM)[rank * batch_size:(rank + 1) * batch_size]
        return z, downsample(self.teacher(z, noise_mode="fixed"), STUDENT.resolution)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--batch-size", type=int, required=True, help="per rank")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    if ctx.world_size * args.batch_size > GLOBAL_BATCH:
        raise SystemExit(f"world size x batch size exceeds the global batch {GLOBAL_BATCH}")

    torch.manual_seed(0)
    teacher = Generator(TEACHER).eval().requires_grad_(False)
    tame_new_modulations(teacher, set())
    teacher.estimate_w_avg(64, 0)
    student, pretrained = build_student(STUDENT, teacher, "scratch", seed=0)
    names = {id(p): n for n, p in student.named_parameters()}
    applied: list[dict[str, torch.Tensor]] = []
    register_optimizer_step_pre_hook(lambda opt, a, kw: applied.append(
        {names[id(p)]: p.grad.clone() for group in opt.param_groups for p in group["params"] if p.grad is not None}))

    d = validate({"distill": {"steps": args.steps, "batch_size": args.batch_size, "head_init": "random",
                              "lr": 1e-3, "sample_every": 1000, "checkpoint_every": 1000}}, ["distill"])["distill"]
    val_z = latents(2, 99, STYLE_DIM)
    val = (val_z, GlobalBatches(teacher)(0, 0, 2)[1])
    train(student, pretrained, GlobalBatches(teacher), val, TrainConfig.from_params(d), args.out / "resume.pt", "ddp",
          ctx=ctx, progress=False)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(applied, args.out / f"grads_rank{ctx.rank}_of{ctx.world_size}.pt")
    if ctx.world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
