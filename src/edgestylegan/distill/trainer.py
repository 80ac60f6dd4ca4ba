"""The distillation loop: Adam on the student (and a discriminator when the GAN loss is on), checkpoints that an
interrupted run resumes from, dvclive logging, and data-parallel training under torchrun.

    python stages/distill.py                                   # one process (CPU or one GPU)
    torchrun --standalone --nproc_per_node 4 stages/distill.py # 4 GPUs: per-rank batches, averaged gradients

Multi-process training all-reduces (averages) the gradients of every trainable tensor after each backward, as
DistributedDataParallel does (done by hand, as stylegan2-ada does, so the R1 double-backward needs no DDP
special-casing). Each rank draws its own batches; rank 0 alone logs, evaluates and writes checkpoints.

Resume: every `checkpoint_every` steps rank 0 writes `resume_path` atomically with the student (all heads), the
discriminator, both optimisers, the step, the loss history and a fingerprint of everything that defines the run
(params, teacher and pool hashes). A new run with the same fingerprint continues from it; any other fingerprint
starts over. Batches and augmentations are pure functions of (seed, step, rank), so no RNG state is needed.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pickle
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from ..io.atomic import atomic_path
from ..models.discriminator import Discriminator
from ..models.mobilestylegan import Generator
from .augment import diff_augment, parse_policy
from .losses import PerceptualLoss, d_logistic, g_nonsaturating, multiscale_perceptual, pyramid_loss, r1_penalty
from ..imaging import psnr
from .students import fit_heads_lstsq, head_modules
from .targets import step_generator

Batches = Callable[[int, int, int], tuple[torch.Tensor, torch.Tensor]]


NOT_TRAINING = {
    "teacher": "teacher: which network (teachers.load_teacher)",
    "stylegan2_file": "teacher: StyleGAN2 checkpoint on disk",
    "stylegan2_url": "teacher: StyleGAN2 checkpoint address",
    "stylegan2_sha256": "teacher: StyleGAN2 checkpoint hash",
    "targets": "pool: the batch source (PoolBatches | OnlineBatches)",
    "teacher_runtime": "pool: runtime that renders the teacher's images (targets.TeacherRenderer)",
    "pool_size": "pool: training latents (targets.PoolSpec)",
    "pool_seed": "pool: seed of the training latents",
    "val_size": "pool: held-out latents",
    "val_seed": "pool: seed of the held-out latents",
    "sample_count": "outputs: held-out latents in the sample grids",
    "device": "device: where the processes run (init_distributed)",
    "block_steps": "trunk: block-wise fit of narrowed stages (students.fit_narrowed_stages, via train's fit_trunk)",
    "block_samples": "trunk: latents of the block-wise fit",
}
"""`distill` params keys that are not the training loop's, and whose they are. `TrainConfig.from_params` takes every
other key of the section and fails on a key in neither (a new schema key must be placed on purpose)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training loop's settings: the `distill` params section minus `NOT_TRAINING` (defaults and ranges are the
    schema's, `edgestylegan.config`)."""

    steps: int                        # Optimiser steps (per rank).
    batch_size: int                   # Per rank.
    lr: float                         # Adam lr of new parameters (heads; everything for a scratch student).
    lr_pretrained: float              # Adam lr of parameters copied from the teacher; 0 freezes them.
    lr_schedule: str                  # constant | cosine (to 0 at the last step).
    head_init: str                    # lstsq (closed-form fit of new heads) | random.
    head_init_samples: int
    crop: int                         # Frozen trunk, head-only, pixel losses only: train on aligned crops this big.
    truncation: float                 # psi of the training latents (1 = the full distribution).
    w_l1: float
    w_l2: float
    perceptual: str                   # none | enl0 | vgg16
    w_perceptual: float
    vgg16_weights: str
    w_gan: float                      # 0 disables the discriminator entirely.
    d_lr: float
    d_channel_base: int
    d_channel_max: int
    augment: str
    r1_gamma: float
    r1_interval: int
    seed: int
    log_every: int
    sample_every: int                 # Validation PSNR + sample image to dvclive.
    checkpoint_every: int

    @classmethod
    def from_params(cls, d: dict) -> "TrainConfig":
        """From the validated `distill` section (`config.load_params`)."""
        fields = [f.name for f in dataclasses.fields(cls)]
        unplaced = sorted(set(d) - set(fields) - set(NOT_TRAINING))
        if unplaced:
            raise KeyError(f"distill params {unplaced} are neither TrainConfig fields nor listed in "
                           "trainer.NOT_TRAINING: add each to one of them")
        missing = sorted(set(fields) - set(d))
        if missing:
            raise KeyError(f"the distill section lacks TrainConfig fields {missing} (pass the validated section)")
        return cls(**{name: d[name] for name in fields})


@dataclasses.dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistContext:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; otherwise a single process. device: auto | cpu | cuda."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        return DistContext(dist.get_rank(), world, torch.device(f"cuda:{local}" if use_cuda else "cpu"))
    return DistContext(0, 1, torch.device("cuda" if use_cuda else "cpu"))


def _all_reduce_grads(params: list[nn.Parameter], ctx: DistContext) -> None:
    if ctx.world_size == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def lr_factor(schedule: str, step: int, steps: int) -> float:
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
    raise ValueError(f"unknown lr schedule {schedule!r}")


@torch.no_grad()
def evaluate(student: Generator, z: torch.Tensor, images: torch.Tensor, truncation: float, device,
             batch_size: int = 8) -> dict[str, float]:
    """Paired fidelity vs the teacher images (already at the student resolution): PSNR (dB), L1, L2."""
    was_training = student.training
    student.eval()
    psnrs, l1, l2 = [], 0.0, 0.0
    for start in range(0, len(z), batch_size):
        zb = z[start:start + batch_size].to(device)
        tb = images[start:start + batch_size].to(device).float()
        out = student.synthesis(student.style(zb, truncation), noise_mode="fixed")
        psnrs.append(psnr(out, tb).cpu())
        l1 += float((out - tb).abs().mean(dim=(1, 2, 3)).sum())
        l2 += float((out - tb).square().mean(dim=(1, 2, 3)).sum())
    student.train(was_training)
    p = torch.cat(psnrs)
    return {"psnr_db": float(p.mean()), "psnr_db_min": float(p.min()), "l1": l1 / len(z), "l2": l2 / len(z)}


@torch.no_grad()
def student_images(student: Generator, z: torch.Tensor, truncation: float, device, batch_size: int = 8):
    was_training = student.training
    student.eval()
    out = torch.cat([student.synthesis(student.style(z[i:i + batch_size].to(device), truncation), noise_mode="fixed")
                     .cpu() for i in range(0, len(z), batch_size)])
    student.train(was_training)
    return out


#----------------------------------------------------------------------------


@torch.no_grad()
def cache_module_inputs(student: Generator, module: nn.Module, z: torch.Tensor, truncation: float, device,
                        progress: bool = True, batch_size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(first input of `module` [N, C, s, s] float16 on CPU, w [N, style_dim]) for every latent in z."""
    captured = {}
    hook = module.register_forward_hook(lambda m, args, out: captured.__setitem__("x", args[0]))
    was_training = student.training
    student.eval()
    feats, ws = None, []
    try:
        for start in tqdm(range(0, len(z), batch_size), desc="trunk features", unit="batch", disable=not progress):
            w = student.style(z[start:start + batch_size].to(device), truncation)
            student.synthesis(w, noise_mode="fixed")
            x = captured["x"]
            if feats is None:
                feats = torch.empty((len(z), *x.shape[1:]), dtype=torch.float16)
            feats[start:start + len(x)] = x.half().cpu()
            ws.append(w.cpu())
    finally:
        hook.remove()
        student.train(was_training)
    return feats, torch.cat(ws)


@dataclasses.dataclass
class TrainResult:
    steps: int
    resumed_from: int                 # 0 when the run started fresh.
    seconds: float                    # Wall time of the loop, summed over resumed segments.
    history: list[dict]               # One record per logged step.
    val: dict[str, float]             # Final evaluate() on the held-out latents.
    head_fit: dict[str, float]        # Closed-form head fit residuals (empty when resumed or head_init=random).
    trunk_fit: dict[str, dict]        # What `fit_trunk` returned (empty when resumed or not given).


def _load_resume(path: Path, fingerprint: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        # What torch.load raises for a truncated, empty or foreign file: the resume file is scratch state outside
        # DVC's outs, so an unreadable one must not block a fresh run. Anything else is a bug and propagates.
        print(f"ignoring unreadable resume checkpoint {path}: {e}")
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        print(f"ignoring resume checkpoint {path}: it belongs to a different configuration")
        return None
    return state


def _save_resume(path: Path, state: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:  # Atomic: a kill during the save keeps the previous checkpoint.
        torch.save(state, tmp)


def train(student: Generator, pretrained: set[str], batches: Batches, val: tuple[torch.Tensor, torch.Tensor],
          cfg: TrainConfig, resume_path: str | Path, fingerprint: str, live_dir: str | Path | None = None,
          ctx: DistContext | None = None, progress: bool = True, sample_z: torch.Tensor | None = None,
          sample_images: torch.Tensor | None = None, stop_after: int | None = None,
          fit_trunk: Callable[[], dict] | None = None) -> TrainResult:
    """Distil into `student` in place. `pretrained`: parameter names initialised from the teacher (copied, or fitted
    by `fit_trunk`), trained at lr_pretrained.

    fit_trunk: run once on a fresh start (not on resume) before trunk features are cached, e.g. the block-wise fit
    of narrowed stages (`students.fit_narrowed_stages`). stop_after: return after this many steps of this call
    (tests: simulate an interruption).
    """
    ctx = ctx or DistContext()
    device = ctx.device
    resume_path = Path(resume_path)
    student.to(device).train()
    student.mapping.requires_grad_(False)

    # Parameter groups: copied-from-teacher vs new.
    named = [(n, p) for n, p in student.named_parameters() if not n.startswith("mapping.")]
    old = [p for n, p in named if n in pretrained]
    new = [p for n, p in named if n not in pretrained]
    if cfg.lr_pretrained == 0:
        for p in old:
            p.requires_grad_(False)
        old = []
    heads = head_modules(student)
    final_name, final_head = heads[-1]
    head_type, factor = type(final_head), final_head.factor
    last_index = len(student.synthesis.blocks) - 1
    last_name, last_block = f"synthesis.blocks.{last_index}", student.synthesis.blocks[last_index]
    in_head = lambda n: any(n.startswith(h + ".") for h, _ in heads)  # noqa: E731
    # Frozen pretrained trunk: only the final head (or the new last block and its head, for a student whose last
    # block is narrower than the teacher's) can change the exported student, so train just that suffix, on trunk
    # features computed once per pool latent (the trunk forward is ~all of a step's cost on a CPU).
    suffix_name, suffix = None, None
    if cfg.lr_pretrained == 0:
        fresh = [n for n, _ in named if n not in pretrained and not in_head(n)]
        if not fresh:
            suffix_name, suffix = final_name, final_head
        elif last_index >= 0 and all(n.startswith(last_name + ".") for n in fresh):
            suffix_name, suffix = last_name, last_block
    head_only = suffix is final_head
    if suffix is not None:
        for n, p in named:
            if not n.startswith(suffix_name + "."):
                p.requires_grad_(False)
        new = list(suffix.parameters())
    groups = [{"params": new, "lr": cfg.lr, "base_lr": cfg.lr}]
    if old:
        groups.append({"params": old, "lr": cfg.lr_pretrained, "base_lr": cfg.lr_pretrained})
    g_params = new + old
    opt_g = torch.optim.Adam(groups)

    disc, opt_d, policy = None, None, ()
    if cfg.w_gan > 0:
        torch.manual_seed(cfg.seed + 1)
        disc = Discriminator(student.resolution, cfg.d_channel_base, cfg.d_channel_max).to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr)
        policy = parse_policy(cfg.augment)
    perceptual = None
    if cfg.w_perceptual > 0 and cfg.perceptual != "none":
        perceptual = PerceptualLoss(cfg.perceptual, cfg.vgg16_weights).to(device)

    # Resume or initialise.
    start, history, seconds, head_fit, trunk_fit = 0, [], 0.0, {}, {}
    state = _load_resume(resume_path, fingerprint)
    if state is not None:
        student.load_state_dict(state["student"])
        opt_g.load_state_dict(state["opt_g"])
        if disc is not None:
            disc.load_state_dict(state["disc"])
            opt_d.load_state_dict(state["opt_d"])
        start, history, seconds = int(state["step"]), list(state["history"]), float(state["seconds"])
        if ctx.is_main:
            print(f"resuming from {resume_path} at step {start}/{cfg.steps}")
    if state is None and fit_trunk is not None:
        trunk_fit = fit_trunk()
    cache = None
    if suffix is not None and hasattr(batches, "indices"):
        cache = cache_module_inputs(student, suffix, batches.pool.train_z, cfg.truncation, device,
                                    progress and ctx.is_main)
    if state is None and cfg.head_init == "lstsq":
        new_heads = {n for n, _ in heads if f"{n}.conv.conv.weight" not in pretrained}
        if suffix is not None:
            new_heads &= {final_name}
        z0, t0 = batches.init_samples(cfg.head_init_samples)
        with torch.no_grad():
            w0 = student.style(z0.to(device), cfg.truncation)
        # init_samples are the pool's first items, so their cached head inputs are the cache's first rows.
        inputs = {final_name: cache[0][:len(z0)]} if cache is not None and head_only else None
        head_fit = fit_heads_lstsq(student, w0, t0.to(device), new_heads, inputs=inputs)
    resumed_from = start

    live = None
    if ctx.is_main and live_dir is not None:
        from dvclive import Live

        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
        for record in history:  # DVC removed the old log with the outs: replay what the checkpoint remembers.
            live.step = record["step"]
            for k, v in record.items():
                if k != "step":
                    live.log_metric(k, v)
            live.next_step()

    def checkpoint(step: int) -> None:
        if not ctx.is_main:
            return
        state = {"fingerprint": fingerprint, "step": step, "history": history, "seconds": seconds,
                 "student": student.state_dict(), "opt_g": opt_g.state_dict()}
        if disc is not None:
            state.update(disc=disc.state_dict(), opt_d=opt_d.state_dict())
        _save_resume(resume_path, state)

    def log_samples(step: int) -> dict:
        metrics = {f"val/{k}": v for k, v in evaluate(student, *val, cfg.truncation, device).items()}
        if live is not None and sample_z is not None:
            from ..imaging import grid, to_uint8
            from PIL import Image

            fake = student_images(student, sample_z, cfg.truncation, device)
            mosaic = grid(to_uint8(torch.cat((sample_images.float(), fake))), columns=len(sample_z))
            live.log_image("samples.png", Image.fromarray(mosaic.permute(1, 2, 0).numpy()))
        return metrics

    if start == 0 and ctx.is_main and cfg.sample_every:  # Where training starts from (after the head fit).
        record = {"step": 0, **log_samples(0)}
        history.append(record)
        if live is not None:
            live.step = 0
            for k, v in record.items():
                if k != "step":
                    live.log_metric(k, v)
            live.next_step()

    def forward(step: int):
        """(image, frequency outputs of the trained heads, target) for this step's batch."""
        if cache is not None and not head_only:   # New last block + head on its cached inputs (no crops: 3x3).
            idx = batches.indices(step, ctx.rank, cfg.batch_size)
            x, w = cache[0][idx].to(device).float(), cache[1][idx].to(device)
            _, freq = last_block(x, w, "fixed")
            return final_head.to_rgb(freq), [freq], batches.pool.train_images[idx].to(device).float()
        if cache is not None:
            idx = batches.indices(step, ctx.rank, cfg.batch_size)
            size = cache[0].shape[-1]
            crop = cfg.crop // factor if cfg.crop and perceptual is None and disc is None else 0
            if 0 < crop < size:
                # The head is a 1x1 conv and the pixel losses are local, so an aligned crop of features and target
                # gives exactly the loss on that window, at a fraction of the cost.
                offsets = torch.randint(0, size - crop + 1, (len(idx), 2),
                                        generator=step_generator(cfg.seed, step, ctx.rank, salt=3)).tolist()
                feats = torch.stack([cache[0][i, :, y:y + crop, x:x + crop] for i, (y, x) in zip(idx, offsets)])
                images = torch.stack([batches.pool.train_images[i, :, factor * y:factor * (y + crop),
                                                                factor * x:factor * (x + crop)]
                                      for i, (y, x) in zip(idx, offsets)])
            else:
                feats, images = cache[0][idx], batches.pool.train_images[idx]
            x, w = feats.to(device).float(), cache[1][idx].to(device)
            freq = final_head(x, w)
            return final_head.to_rgb(freq), [freq], images.to(device).float()
        z, target = batches(step, ctx.rank, cfg.batch_size)
        z, target = z.to(device), target.to(device)
        with torch.no_grad():
            w = student.style(z, cfg.truncation)
        img, freqs = student.synthesis(w, noise_mode="fixed", return_freqs=True)
        return img, (freqs[-1:] if suffix is not None else freqs), target

    window: dict[str, float] = {}
    window_n = 0
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(total=cfg.steps, initial=start, desc="distill", unit="step", disable=not (progress and ctx.is_main))
    t_last = time.perf_counter()
    for step in range(start, end):
        factor = lr_factor(cfg.lr_schedule, step, cfg.steps)
        for group in opt_g.param_groups:
            group["lr"] = group["base_lr"] * factor

        img, freqs, target = forward(step)

        # Generator step.
        terms = pyramid_loss(freqs, target, head_type)
        total = cfg.w_l1 * terms["l1"] + cfg.w_l2 * terms["l2"]
        if perceptual is not None:
            images = [head_type.to_rgb(f) for f in freqs[:-1]] + [img]
            terms["perceptual"] = multiscale_perceptual(perceptual, images, target)
            total = total + cfg.w_perceptual * terms["perceptual"]
        if disc is not None:
            disc.requires_grad_(False)
            aug_gen = step_generator(cfg.seed, step, ctx.rank, salt=10)
            terms["g_adv"] = g_nonsaturating(disc(diff_augment(img, policy, aug_gen)))
            total = total + cfg.w_gan * terms["g_adv"]
            disc.requires_grad_(True)
        terms["total"] = total
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        _all_reduce_grads(g_params, ctx)
        opt_g.step()

        # Discriminator step (+ lazy R1 on the un-augmented teacher images).
        if disc is not None:
            for group in opt_d.param_groups:
                group["lr"] = cfg.d_lr
            d_params = list(disc.parameters())
            aug_gen = step_generator(cfg.seed, step, ctx.rank, salt=11)
            fake = diff_augment(img.detach(), policy, aug_gen)
            real = diff_augment(target, policy, aug_gen)
            terms["d"] = d_logistic(disc(real), disc(fake))
            opt_d.zero_grad(set_to_none=True)
            terms["d"].backward()
            _all_reduce_grads(d_params, ctx)
            opt_d.step()
            if cfg.r1_interval > 0 and step % cfg.r1_interval == 0:
                terms["r1"] = r1_penalty(disc, target)
                opt_d.zero_grad(set_to_none=True)
                (terms["r1"] * (cfg.r1_gamma / 2) * cfg.r1_interval).backward()
                _all_reduce_grads(d_params, ctx)
                opt_d.step()

        for k, v in terms.items():
            window[k] = window.get(k, 0.0) + float(v.detach())
        window_n += 1
        done = step + 1
        now = time.perf_counter()
        seconds += now - t_last
        t_last = now
        bar.update(1)
        bar.set_postfix(loss=f"{float(total.detach()):.4f}")

        if ctx.is_main and (done % cfg.log_every == 0 or done == cfg.steps):
            record = {"step": done, **{f"train/{k}": v / window_n for k, v in window.items()},
                      "train/lr": cfg.lr * factor}
            window, window_n = {}, 0
            if cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps):
                record.update(log_samples(done))
                t_last = time.perf_counter()  # Evaluation time is not training time.
            history.append(record)
            if live is not None:
                live.step = done
                for k, v in record.items():
                    if k != "step":
                        live.log_metric(k, v)
                live.next_step()
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            checkpoint(done)
            t_last = time.perf_counter()
    bar.close()
    if end < cfg.steps:  # Interrupted on purpose (tests).
        checkpoint(end)
        if live is not None:
            live.end()
        return TrainResult(end, resumed_from, seconds, history, {}, head_fit, trunk_fit)

    val_metrics = evaluate(student, *val, cfg.truncation, device) if ctx.is_main else {}
    if live is not None:
        live.end()
    if ctx.world_size > 1:
        dist.barrier()
    return TrainResult(cfg.steps, resumed_from, seconds, history, val_metrics, head_fit, trunk_fit)
