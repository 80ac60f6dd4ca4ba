"""Distillation recovery of a pruned MobileStyleGAN: stage-wise reconstruction of the dense teacher, masks fixed.

    stats = recover_by_distillation(pruned, teacher, calibration_seeds=range(300000, 302048), steps=0, lr=3e-4,
                                    batch_size=4, seed=0, resume_path="tmp/recover.pt", live_dir="dvclive/recover")

The synthesis network is split into stages: `conv1` (the constant input and the 3x3 conv at 4 px), then one stage
per synthesis block (IDWT upsample + two depthwise/pointwise StyledConvs; the last block with its frequency head).
Each stage is fitted, in order, to reproduce the dense teacher's output of the same stage (teacher features for every
stage but the last; for the last, the teacher's packed Haar coefficients, which are the image under an orthogonal
transform) from its input, in two phases:

1. ``fit="lstsq"``: closed-form masked least squares, layer by layer inside the stage. Every layer is linear in its
   weights given its input (modulation linears on w; the depthwise 3x3, pointwise 1x1, head and 3x3 convs on their
   modulated input). So each layer's kept weights (+ bias) are set to the ridge solution (damping `damp` x the mean
   diagonal of each row's Gram matrix) that maps the pruned model's input of that layer (the earlier layers of the
   stage already refitted) to the teacher's output of that layer. Modulations use every calibration style (the
   mapping network is cheap); the convs use the stage's calibration features (below).
2. ``steps`` Adam steps on the stage's output loss (mean squared error relative to the teacher output's mean
   square), cosine decay from `lr` to 0, `batch_size` latents per step.

Stage inputs (`inputs`): ``teacher`` (default) feeds each stage the teacher's outputs of the preceding stage, so
every stage learns the teacher's function on the teacher's activations; ``recovered`` feeds it the outputs of the
already-recovered preceding stages of the pruned model itself (sequential reconstruction: each stage also learns to
undo the error that reaches it). Which is better depends on the starting point. From a masked model (l1, uniform per
layer, 0.8) with the least-squares fit, ``recovered`` generalised worse (held-out PSNR 12.14 vs 12.22 dB with 64
latents). From the OBS-reconstructed model at 0.6 (`prune.recovery: distill`, sensitivity allocation), with Adam
alone (`fit="none"`), it is better (held-out PSNR at 256 px on 16 evaluation latents, 40 steps at lr 1e-5: 22.81 vs
22.75 dB, reconstruct alone 22.57), while the least-squares fit on the distillation latents undoes the reconstruction
(21.47 dB with no Adam step): the OBS fit used far more calibration pixels. The teacher's stage outputs on the
calibration latents are computed once and cached (float16; float32 for values that would not fit).

Calibration data: whole-map stages (output maps no bigger than `crop`) use the first n_k calibration latents,
n_k = clip(ceil(fit_columns / pixels_k), feature_samples, len(calibration_seeds)), where pixels_k is the stage's
output map size (at 1024 px and the defaults, conv1 gets 512 latents, block 0 128, the rest `feature_samples`). The
other stages are windowed: every one of `feature_samples` latents gets `fit_windows` random windows, nested
through those stages (a window pyramid). Each last-stage window has crop x crop exact output pixels; going down,
each stage's input window (`crop` halved, +4 pixels, per stage) is the smallest whose exact outputs cover what the
stage above reads. A stage is local (2x2 IDWT, two 3x3 depthwise convs, 1x1 convs), so a window's outputs equal the
whole map's except for a 2-pixel margin, which is computed but left out of the fit and the loss (kept where the
window touches the image border, whose zero padding is the real one); the fixed noise maps are cropped with the
window. This way the big stages cost a few small windows per latent instead of a 1024 px forward.

Masks: every `nn.Conv2d` / `nn.Linear` weight of the synthesis network keeps its zeros. The zero pattern is read from
the pruned model at the start (an entry that is exactly 0 is held at +0.0); the fit only solves for kept entries,
gradients at masked entries are zeroed before each Adam step and the entries are set to +0.0 after it, so they stay
bitwise +0.0. Biases, the constant input and the noise strengths (never pruned) change too. The mapping network,
`w_avg` and the teacher are never touched.

Determinism and resume: windows and batches are pure functions of (seed, stage, step). The checkpoint at
`resume_path` (written atomically, read with `torch.load(weights_only=True)`) holds the synthesis weights, the
current stage's Adam state, the position and the loss history, under a fingerprint of the arguments and of both
models' weights. A run with the same fingerprint continues from it and ends bit-identical to an uninterrupted run
(same machine and thread count); any other checkpoint is ignored. While the least-squares fit runs, torch's
flush-denormal mode is on (the batched Cholesky factorisations are otherwise ~8x slower); afterwards it is switched
back off, torch's default.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import pickle
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..io.atomic import atomic_path
from ..models.mobilestylegan import Generator, MobileSynthesisBlock, StyledConv, latents_from_seeds

INPUT_MODES = ("recovered", "teacher")
FIT_MODES = ("lstsq", "none")
FORMAT = "edgestylegan.recover.v1"
_FP16_MAX = 6.0e4       # Stage outputs above this (in absolute value) are cached in float32.
_CHUNK_PIXELS = 65536   # Output pixels per forward when caching/propagating (a function of the stage only).


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_args(pruned, teacher, seeds, steps, lr, batch_size, seed, feature_samples, crop, inputs, fit, damp,
                fit_columns, fit_windows, checkpoint_every, log_every, stop_after):
    if not isinstance(pruned, Generator) or not isinstance(teacher, Generator):
        raise ValueError("pruned and teacher must both be MobileStyleGAN Generators")
    if pruned is teacher:
        raise ValueError("pruned and teacher are the same object: pass a pruned copy of the teacher")
    if pruned.config != teacher.config:
        raise ValueError(f"pruned and teacher architectures differ: {pruned.config} vs {teacher.config}")
    if next(pruned.parameters()).device != next(teacher.parameters()).device:
        raise ValueError("pruned and teacher must be on the same device")
    if len(seeds) == 0:
        raise ValueError("calibration_seeds is empty")
    if len(set(seeds)) != len(seeds):
        raise ValueError("calibration_seeds has duplicates")
    for name, value, low in (("steps", steps, 0), ("batch_size", batch_size, 1), ("feature_samples", feature_samples, 1),
                             ("fit_columns", fit_columns, 1), ("fit_windows", fit_windows, 1), ("checkpoint_every", checkpoint_every, 1),
                             ("log_every", log_every, 1)):
        if not _is_int(value) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if feature_samples > len(seeds):
        raise ValueError(f"feature_samples {feature_samples} is larger than the {len(seeds)} calibration latents")
    if batch_size > feature_samples:
        raise ValueError(f"batch_size {batch_size} is larger than feature_samples {feature_samples}")
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not math.isfinite(damp) or damp <= 0:
        raise ValueError(f"damp must be a finite number > 0, got {damp!r}")
    if not _is_int(crop) or crop < 4 or crop % 2:
        raise ValueError(f"crop must be an even integer >= 4 (output pixels per side), got {crop!r}")
    if inputs not in INPUT_MODES:
        raise ValueError(f"inputs must be one of {INPUT_MODES}, got {inputs!r}")
    if fit not in FIT_MODES:
        raise ValueError(f"fit must be one of {FIT_MODES}, got {fit!r}")
    if steps == 0 and fit == "none":
        raise ValueError("steps=0 with fit='none' would change nothing: give steps >= 1 or fit='lstsq'")
    if stop_after is not None and (not _is_int(stop_after) or stop_after < 1):
        raise ValueError(f"stop_after must be an integer >= 1 or None, got {stop_after!r}")


#----------------------------------------------------------------------------
# Stages.


def _stage_names(gen: Generator) -> list[str]:
    return ["conv1"] + [f"blocks.{i}" for i in range(len(gen.synthesis.blocks))]


def _out_side(gen: Generator, index: int) -> int:
    """Output map side of stage `index` (the last stage's Haar coefficients are at its feature resolution)."""
    return 4 if index == 0 else 2 ** (index + 2)


def _stage_parameters(gen: Generator, index: int) -> list[tuple[str, nn.Parameter]]:
    syn = gen.synthesis
    if index == 0:
        return [("synthesis.const", syn.const)] + [(f"synthesis.conv1.{n}", p) for n, p in syn.conv1.named_parameters()]
    block = syn.blocks[index - 1]
    final = index == len(syn.blocks)
    # A non-final head (all_heads configs) does not reach the image: it is left as it is.
    return [(f"synthesis.blocks.{index - 1}.{n}", p) for n, p in block.named_parameters()
            if final or not n.startswith("to_img.")]


def _stage_forward(gen: Generator, index: int, x: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor:
    """Whole-map output of stage `index`: features, or the packed Haar coefficients for the last stage."""
    syn = gen.synthesis
    if index == 0:
        return syn.conv1(syn.const.expand(w.shape[0], -1, -1, -1), w, "fixed")
    feats, freq = syn.blocks[index - 1](x, w, "fixed")
    return freq if index == len(syn.blocks) else feats


def _noise(layer: StyledConv, offsets: list[tuple[int, int]] | None, side: int) -> torch.Tensor:
    """The fixed noise map, whole ([1, 1, S, S]) or cropped to each window ([B, 1, side, side])."""
    full = layer.noise.noise_map
    if offsets is None:
        return full
    return torch.stack([full[0, :, 2 * oy:2 * oy + side, 2 * ox:2 * ox + side] for oy, ox in offsets])


def _act(layer: StyledConv, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(y + layer.noise.noise_strength * noise, 0.2)


def _block_window(block: MobileSynthesisBlock, x: torch.Tensor, w: torch.Tensor, offsets: list[tuple[int, int]],
                  last: bool) -> torch.Tensor:
    """A block on input windows x [B, C, h, h] whose top-left corners (input pixels) are `offsets`: the fixed noise
    maps are cropped to each window (output pixels 2*offset ..)."""
    side = 2 * x.shape[-1]
    y = block.up(x, w)
    y = _act(block.conv1, block.conv1.conv(y, w), _noise(block.conv1, offsets, side))
    y = _act(block.conv2, block.conv2.conv(y, w), _noise(block.conv2, offsets, side))
    return block.to_img(y, w) if last else y


def _windows(x: torch.Tensor, idx: list[int], offsets: list[tuple[int, int]], size: int, scale: int = 1):
    return torch.stack([x[i, :, scale * oy:scale * oy + size, scale * ox:scale * ox + size]
                        for i, (oy, ox) in zip(idx, offsets)]).float()


def _valid_mask(offsets, window: int, side: int, out_side: int) -> torch.Tensor:
    """[B, 1, S, S] ones on the output pixels of each window that equal the whole-map output."""
    mask = torch.zeros(len(offsets), 1, out_side, out_side)
    for i, (oy, ox) in enumerate(offsets):
        y0, y1 = (0 if oy == 0 else 2), (out_side if oy + window == side else out_side - 2)
        x0, x1 = (0 if ox == 0 else 2), (out_side if ox + window == side else out_side - 2)
        mask[i, :, y0:y1, x0:x1] = 1
    return mask


#----------------------------------------------------------------------------
# Caches.


def _store(x: torch.Tensor) -> torch.Tensor:
    return x.half() if float(x.abs().max()) <= _FP16_MAX else x.float().clone()


def _chunk(gen: Generator, index: int) -> int:
    return max(1, _CHUNK_PIXELS // _out_side(gen, index) ** 2)


@torch.no_grad()
def _teacher_cache(teacher: Generator, w: torch.Tensor, counts: list[int], progress: bool) -> list[torch.Tensor]:
    """[teacher output of stage k on the first counts[k] styles] (counts non-increasing)."""
    outs, x = [], None
    for k in tqdm(range(len(counts)), desc="teacher targets", unit="stage", disable=not progress):
        step, parts = _chunk(teacher, k), []
        for start in range(0, counts[k], step):
            end = min(start + step, counts[k])
            parts.append(_stage_forward(teacher, k, None if x is None else x[start:end].float(), w[start:end]))
        full = torch.cat(parts)
        del parts
        outs.append(_store(full))
        x = outs[-1]
        del full
    return outs


@torch.no_grad()
def _propagate(gen: Generator, index: int, x: torch.Tensor | None, w: torch.Tensor, target: torch.Tensor,
               count: int) -> tuple[torch.Tensor, float]:
    """(stage `index` of `gen` on the first `count` cached inputs, in the cache dtype; its squared error vs `target`
    relative to the target's energy)."""
    step, outs, err, energy = _chunk(gen, index), [], 0.0, 0.0
    for start in range(0, count, step):
        end = min(start + step, count)
        y = _stage_forward(gen, index, None if x is None else x[start:end].float(), w[start:end])
        t = target[start:end].float()
        err += float((y - t).square().sum())
        energy += float(t.square().sum())
        outs.append(y)
    return _store(torch.cat(outs)), err / max(energy, 1e-30)


#----------------------------------------------------------------------------
# Closed-form masked least squares.


def _columns(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """[B, C, H, W] -> [C, P]: the pixels where `valid` ([B, 1, H, W], or None for all) is set."""
    cols = x.transpose(0, 1).reshape(x.shape[1], -1)
    return cols if valid is None else cols[:, valid.reshape(-1).bool()]


def _solve_rows(gram: torch.Tensor, cross: torch.Tensor, keep: torch.Tensor, damp: float) -> torch.Tensor:
    """Row o of the result minimises ||a X - y_o||^2 + ridge over a supported on keep[o] (zero elsewhere), given
    gram = X X^T [I, I] and cross = X Y^T [I, O]; ridge = damp * mean diagonal of the supported block."""
    gram, cross = gram.double(), cross.double()
    rows, inputs = keep.shape
    out = torch.zeros(rows, inputs + 1, dtype=torch.float64)   # Column `inputs`: where padding entries land.
    sizes = keep.sum(1)
    diag = torch.cat((gram.diagonal(), torch.ones(1, dtype=torch.float64)))
    gram = F.pad(gram, (0, 1, 0, 1))
    gram[inputs, inputs] = 1.0
    cross = F.pad(cross, (0, 0, 0, 1))
    per = max(1, 2**24 // max(1, int(sizes.max()) ** 2))   # Rows solved together (~128 MiB of float64 systems).
    for start in range(0, rows, per):
        block = keep[start:start + per]
        width = int(sizes[start:start + per].max())
        if width == 0:
            continue
        # Support indices of every row, padded with the dummy index `inputs` (an identity row with rhs 0).
        order = torch.argsort((~block).to(torch.int8), dim=1, stable=True)[:, :width]
        idx = torch.where(torch.gather(block, 1, order), order, torch.full_like(order, inputs))
        real = idx < inputs
        a = gram[idx[:, :, None], idx[:, None, :]]
        a = a * (real[:, :, None] & real[:, None, :])
        mean_diag = (diag[idx] * real).sum(1) / real.sum(1).clamp_min(1)
        a.diagonal(dim1=1, dim2=2).add_(torch.where(real, damp * mean_diag[:, None] + 1e-12, 1.0))
        b = cross[idx, torch.arange(start, start + len(block))[:, None]] * real
        chol, info = torch.linalg.cholesky_ex(a)
        if bool((info != 0).any()):   # Not positive definite after damping (degenerate inputs): fall back to LU.
            sol = torch.linalg.solve(a, b.unsqueeze(-1)).squeeze(-1)
        else:
            sol = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
        out[start:start + len(block)].scatter_(1, idx, sol * real)
    return out[:, :inputs]


def _fit_dense(weight: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor, x: torch.Tensor,
               y: torch.Tensor, damp: float) -> None:
    """Set the kept entries of `weight` [O, I...] (and `bias`) to the least-squares map of columns x [I', P] (I' =
    prod of weight.shape[1:]) onto y [O, P]."""
    keep = mask.reshape(mask.shape[0], -1)
    if bias is not None:
        x = torch.cat((x, torch.ones(1, x.shape[1], dtype=x.dtype)))
        keep = torch.cat((keep, torch.ones(keep.shape[0], 1, dtype=torch.bool)), dim=1)
    sol = _solve_rows(x @ x.T, x @ y.T, keep, damp)
    with torch.no_grad():
        n = weight[0].numel()
        weight.copy_(sol[:, :n].reshape(weight.shape).to(weight.dtype))
        weight.masked_fill_(~mask, 0.0)
        if bias is not None:
            bias.copy_(sol[:, n].to(bias.dtype))


def _fit_depthwise(conv: nn.Conv2d, mask: torch.Tensor, u: torch.Tensor, target: torch.Tensor,
                   valid: torch.Tensor | None, damp: float) -> None:
    """Per-channel least squares of a 3x3 depthwise conv (no bias) from input u to target, both [B, C, H, W]."""
    channels = u.shape[1]
    gram = torch.zeros(channels, 9, 9, dtype=torch.float64)
    cross = torch.zeros(channels, 9, dtype=torch.float64)
    per = max(1, 2**22 // (channels * 9 * u.shape[-1] * u.shape[-2]))
    for start in range(0, u.shape[0], per):
        ub, tb = u[start:start + per], target[start:start + per]
        patches = F.unfold(ub, 3, padding=1).reshape(ub.shape[0], channels, 9, -1)
        t = tb.reshape(tb.shape[0], channels, -1)
        if valid is not None:
            sel = valid[start:start + per].reshape(ub.shape[0], 1, -1).bool()
            patches = patches * sel.unsqueeze(2)
            t = t * sel
        gram += torch.einsum("bckp,bclp->ckl", patches, patches).double()
        cross += torch.einsum("bckp,bcp->ck", patches, t).double()
    keep = mask.reshape(channels, 9)
    m = keep.double()
    diag_mean = (gram.diagonal(dim1=1, dim2=2) * m).sum(1) / m.sum(1).clamp_min(1)
    a = gram * m[:, :, None] * m[:, None, :]
    a = a + torch.diag_embed((1 - m) + m * (damp * diag_mean[:, None] + 1e-12))
    sol = torch.linalg.solve(a, (cross * m).unsqueeze(-1)).squeeze(-1) * m
    with torch.no_grad():
        conv.weight.copy_(sol.reshape(conv.weight.shape).to(conv.weight.dtype))
        conv.weight.masked_fill_(~mask, 0.0)


class _StyleFit:
    """Least squares of modulation linears on every calibration style: one Gram matrix of [w, 1] for all of them."""

    def __init__(self, w_student: torch.Tensor, w_teacher: torch.Tensor):
        self.x = torch.cat((w_student.T, torch.ones(1, len(w_student))))
        self.gram = self.x @ self.x.T
        self.w_teacher = w_teacher

    @torch.no_grad()
    def fit(self, student: nn.Linear, teacher: nn.Linear, mask: torch.Tensor, damp: float) -> None:
        keep = torch.cat((mask, torch.ones(mask.shape[0], 1, dtype=torch.bool)), dim=1)
        sol = _solve_rows(self.gram, self.x @ teacher(self.w_teacher), keep, damp)
        student.weight.copy_(sol[:, :-1].to(student.weight.dtype))
        student.weight.masked_fill_(~mask, 0.0)
        student.bias.copy_(sol[:, -1].to(student.bias.dtype))


@contextlib.contextmanager
def _flush_denormal():
    """Flush-to-zero for denormal floats during the fit: the batched Cholesky factorisations otherwise hit
    denormals and run ~8x slower on x86 (measured on the 1024 px teacher). The mode is global in torch and has no
    getter, so it is switched back off (torch's default) afterwards."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@torch.no_grad()
def _fit_stage(student: Generator, teacher: Generator, index: int, xs, xt, ws, wt, offsets, valid,
               masks: dict[str, torch.Tensor], styles: _StyleFit, damp: float) -> None:
    """Refit stage `index` of `student` layer by layer (module docstring). xs/xt: its inputs (None for conv1), ws/wt
    the styles per item, offsets: the windows' corners (None for whole maps), valid: [B, 1, H, W] or None."""
    if index == 0:
        prefix = "synthesis.conv1.conv"
        sc, tc = student.synthesis.conv1.conv, teacher.synthesis.conv1.conv
        styles.fit(sc.modulation, tc.modulation, masks[f"{prefix}.modulation.weight"], damp)
        us = student.synthesis.const.expand(len(ws), -1, -1, -1) * (sc.modulation(ws) * sc.scale)[:, :, None, None]
        ut = teacher.synthesis.const.expand(len(wt), -1, -1, -1) * (tc.modulation(wt) * tc.scale)[:, :, None, None]
        cols = F.unfold(us, 3, padding=1).transpose(0, 1).reshape(us.shape[1] * 9, -1)
        _fit_dense(sc.conv.weight, sc.conv.bias, masks[f"{prefix}.conv.weight"], cols, _columns(tc.conv(ut), None),
                   damp)
        return
    i = index - 1
    prefix = f"synthesis.blocks.{i}"
    sb, tb = student.synthesis.blocks[i], teacher.synthesis.blocks[i]
    last = index == len(student.synthesis.blocks)
    styles.fit(sb.up.modulation, tb.up.modulation, masks[f"{prefix}.up.modulation.weight"], damp)
    ys, yt = sb.up(xs, ws), tb.up(xt, wt)
    side = ys.shape[-1]
    for name in ("conv1", "conv2"):
        s_layer, t_layer = getattr(sb, name), getattr(tb, name)
        sc, tc = s_layer.conv, t_layer.conv
        p = f"{prefix}.{name}.conv"
        styles.fit(sc.modulation, tc.modulation, masks[f"{p}.modulation.weight"], damp)
        us = ys * (sc.modulation(ws) * sc.scale)[:, :, None, None]
        ut = yt * (tc.modulation(wt) * tc.scale)[:, :, None, None]
        dt = tc.depthwise(ut)
        _fit_depthwise(sc.depthwise, masks[f"{p}.depthwise.weight"], us, dt, valid, damp)
        ds = sc.depthwise(us)
        pt = tc.pointwise(dt)
        _fit_dense(sc.pointwise.weight, sc.pointwise.bias, masks[f"{p}.pointwise.weight"], _columns(ds, valid),
                   _columns(pt, valid), damp)
        noise = _noise(s_layer, offsets, side)
        ys, yt = _act(s_layer, sc.pointwise(ds), noise), _act(t_layer, pt, noise)
        del us, ut, dt, ds, pt
    if last:
        sc, tc = sb.to_img.conv, tb.to_img.conv
        p = f"{prefix}.to_img.conv"
        styles.fit(sc.modulation, tc.modulation, masks[f"{p}.modulation.weight"], damp)
        us = ys * (sc.modulation(ws) * sc.scale)[:, :, None, None]
        ut = yt * (tc.modulation(wt) * tc.scale)[:, :, None, None]
        _fit_dense(sc.conv.weight, sc.conv.bias, masks[f"{p}.conv.weight"], _columns(us, valid),
                   _columns(tc.conv(ut), valid), damp)


#----------------------------------------------------------------------------
# Resume.


def _fingerprint(pruned: Generator, teacher: Generator, settings: dict) -> str:
    h = hashlib.sha256(json.dumps({"format": FORMAT, **settings}, sort_keys=True).encode())
    for gen in (pruned, teacher):
        for name, tensor in gen.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_resume(path: Path, fingerprint: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        print(f"ignoring unreadable recovery checkpoint {path}: {e}")
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        print(f"ignoring recovery checkpoint {path}: it belongs to a different run")
        return None
    return state


def _save_resume(path: Path, state: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:   # A kill during the save keeps the previous checkpoint.
        torch.save(state, tmp)


#----------------------------------------------------------------------------


def _masks(gen: Generator) -> dict[str, torch.Tensor]:
    """Qualified weight name -> bool tensor of the entries that may change (True = kept), for every synthesis
    Conv2d / Linear weight."""
    return {f"synthesis.{n}.weight": m.weight.detach() != 0 for n, m in gen.synthesis.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def _rng(seed: int, stage: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + stage * 100_003 + step) % (2**63))


def _stage_counts(gen: Generator, total: int, feature_samples: int, fit_columns: int, first_window: int) -> list[int]:
    """Calibration latents of every stage: whole-map stages clip(ceil(fit_columns / pixels), feature_samples, total),
    windowed stages feature_samples."""
    counts = []
    for k in range(len(gen.synthesis.blocks) + 1):
        n = feature_samples if k >= first_window else -(-fit_columns // _out_side(gen, k) ** 2)
        counts.append(min(total, max(feature_samples, n)))
    return counts


class _Pyramid:
    """Nested windows of the windowed stages (output maps bigger than `crop`), one per item (latent, window).

    Each item's last-stage window has `crop`^2 exact output pixels at a random place; going down, stage k's input
    window (`size[k]` pixels per side at the corner `corner[k]`, in stage k-1 output pixels) is the smallest one
    whose exact outputs cover what stage k+1 reads, so every stage sees exact inputs and targets (module docstring).
    """

    def __init__(self, gen: Generator, first: int, latents: int, per_latent: int, crop: int, seed: int):
        last = len(gen.synthesis.blocks)
        self.first, self.last = first, last
        self.latent = [i for i in range(latents) for _ in range(per_latent)]
        n = len(self.latent)
        side = _out_side(gen, last)
        g = _rng(seed, last + 1, -1)
        lo = torch.randint(0, side - min(crop, side) + 1, (n, 2), generator=g)   # Exact region wanted at the top.
        need = min(crop, side)
        self.size, self.corner, self.in_side = {}, {}, {}
        for k in range(last, first - 1, -1):
            in_side = _out_side(gen, k - 1)
            size = min(in_side, need // 2 + 4)
            corner = (torch.div(lo, 2, rounding_mode="floor") - 1).clamp(0, in_side - size)
            self.size[k], self.corner[k], self.in_side[k] = size, corner, in_side
            lo, need = corner, size

    def offsets(self, k: int, items) -> list[tuple[int, int]]:
        return [tuple(self.corner[k][i].tolist()) for i in items]

    def valid(self, k: int, items) -> torch.Tensor:
        return _valid_mask(self.offsets(k, items), self.size[k], self.in_side[k], 2 * self.size[k])

    def first_inputs(self, full: torch.Tensor) -> torch.Tensor:
        """Stage `first`'s input windows cut from whole maps of stage first-1 (rows = latents)."""
        items = range(len(self.latent))
        return _windows(full, self.latent, self.offsets(self.first, items), self.size[self.first])

    def next_inputs(self, k: int, out: torch.Tensor) -> torch.Tensor:
        """Stage k+1's input windows cut from stage k's window outputs (rows = items)."""
        rel = self.corner[k + 1] - 2 * self.corner[k]
        size = self.size[k + 1]
        return torch.stack([out[i, :, y:y + size, x:x + size] for i, (y, x) in enumerate(rel.tolist())])


@torch.no_grad()
def _window_forward(gen: Generator, pyr: _Pyramid, k: int, x: torch.Tensor, w: torch.Tensor, items) -> torch.Tensor:
    """Stage k on input windows x (rows = `items`), in chunks of fixed size."""
    per = max(1, _CHUNK_PIXELS // (2 * pyr.size[k]) ** 2)
    items = list(items)
    outs = []
    for start in range(0, len(items), per):
        sel = items[start:start + per]
        outs.append(_block_window(gen.synthesis.blocks[k - 1], x[start:start + per].float(),
                                  w[[pyr.latent[i] for i in sel]], pyr.offsets(k, sel), k == pyr.last))
    return torch.cat(outs)


def _window_error(out: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> float:
    return float(((out - target.float()).square() * valid).sum() / ((target.float().square() * valid).sum() + 1e-30))


def recover_by_distillation(pruned: Generator, teacher: Generator, *, calibration_seeds, steps: int, lr: float,
                            batch_size: int, seed: int, feature_samples: int = 64, crop: int = 32,
                            inputs: str = "teacher", fit: str = "lstsq", damp: float = 0.01,
                            fit_columns: int = 8192, fit_windows: int = 4, resume_path: str | Path | None = None,
                            live_dir: str | Path | None = None, progress: bool = True, checkpoint_every: int = 50,
                            log_every: int = 10, stop_after: int | None = None) -> dict:
    """Recover `pruned` (a pruned copy of `teacher`) in place, stage by stage, its zeros held at +0.0.

    calibration_seeds: latent seeds of the calibration styles (`latents_from_seeds`, psi 1; keep them disjoint from
      the evaluation and fidelity seeds): all of them fit the modulations, the first n_k stage k's convs (module
      docstring). steps: Adam steps per stage after the fit (0: the closed-form fit alone). lr: Adam learning rate
      (cosine to 0 within each stage). batch_size: latents per Adam step (<= feature_samples; windowed stages take
      batch_size * fit_windows windows). seed: windows and batches. feature_samples: calibration latents of the
      windowed stages. crop: exact output pixels per side of a last-stage window; stages whose maps are bigger than
      crop are windowed. inputs: recovered | teacher. fit: lstsq | none (Adam only). damp: relative ridge of the fit.
      fit_columns: output pixels the fit aims for on each whole-map stage. fit_windows: windows per latent.
      resume_path: checkpoint continued from and written every `checkpoint_every` steps and after each stage.
      live_dir: dvclive folder for the loss curves. stop_after: return after this many Adam steps of this call
      (tests: an interruption).

    Returns stats (JSON-serialisable): the settings, per stage the latents, the relative error right after the fit
    and after the Adam phase (on the calibration data that feeds the next stage), the Adam losses and the seconds;
    the total seconds, the mask counts and `masks_intact`. `complete` is False when `stop_after` ended the call early.
    """
    seeds = [int(s) for s in calibration_seeds]
    _check_args(pruned, teacher, seeds, steps, lr, batch_size, seed, feature_samples, crop, inputs, fit, damp,
                fit_columns, fit_windows, checkpoint_every, log_every, stop_after)
    settings = {"calibration_seeds": len(seeds), "calibration_seed_first": seeds[0], "steps": steps,
                "lr": float(lr), "batch_size": batch_size, "seed": seed, "feature_samples": feature_samples,
                "crop": crop, "inputs": inputs, "fit": fit, "damp": float(damp), "fit_columns": fit_columns,
                "fit_windows": fit_windows}
    t_start = time.perf_counter()
    masks = _masks(pruned)
    resume_path = Path(resume_path) if resume_path is not None else None
    fingerprint = _fingerprint(pruned, teacher, {**settings, "calibration_seeds": seeds}) if resume_path else ""

    names = _stage_names(pruned)
    n_stages = len(names)
    last = n_stages - 1
    first_window = next((k for k in range(1, n_stages) if _out_side(pruned, k) > crop), n_stages)
    counts = _stage_counts(pruned, len(seeds), feature_samples, fit_columns, first_window)
    start_stage, start_step, history, seconds, stage_stats, opt_state = 0, 0, [], 0.0, [], None
    state = _load_resume(resume_path, fingerprint) if resume_path is not None else None
    if state is not None:
        pruned.synthesis.load_state_dict(state["synthesis"])
        start_stage, start_step = int(state["stage"]), int(state["step"])
        history, seconds, stage_stats = list(state["history"]), float(state["seconds"]), list(state["stage_stats"])
        opt_state = state["opt"] or None
        if progress:
            print(f"resuming recovery from {resume_path} at stage {start_stage}, step {start_step}/{steps}")
    resumed_from = {"stage": start_stage, "step": start_step}
    timing = {"cache": 0.0, "fit": 0.0}

    def stats(complete: bool) -> dict:
        params = dict(pruned.named_parameters())
        intact = all(bool((params[n].detach()[~m] == 0).all()) and not bool(params[n].detach()[~m].signbit().any())
                     for n, m in masks.items())
        return {"complete": complete, **settings, "stage_latents": counts, "windowed_from": names[first_window]
                if first_window < n_stages else None, "stages": stage_stats, "cache_seconds": timing["cache"],
                "fit_seconds": timing["fit"], "train_seconds": seconds, "seconds": time.perf_counter() - t_start,
                "resumed_from": resumed_from, "masked_params": sum(m.numel() for m in masks.values()),
                "masked_kept": sum(int(m.sum()) for m in masks.values()), "masks_intact": intact}

    if start_stage >= n_stages:   # A finished run's checkpoint: nothing left to do.
        return stats(True)

    saved = {"pruned": (pruned.training, {n: p.requires_grad for n, p in pruned.named_parameters()}),
             "teacher": (teacher.training, {n: p.requires_grad for n, p in teacher.named_parameters()})}
    teacher.eval().requires_grad_(False)
    pruned.eval().requires_grad_(False)
    live = None
    if live_dir is not None:
        from dvclive import Live

        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
        for record in history:   # A resumed run replays what the checkpoint remembers.
            live.step = record["step"]
            for key, v in record.items():
                if key != "step":
                    live.log_metric(key, v)
            live.next_step()

    def save(stage: int, step: int, stage_list: list, opt_sd: dict) -> None:
        _save_resume(resume_path, {"fingerprint": fingerprint, "stage": stage, "step": step, "history": history,
                                   "seconds": seconds, "stage_stats": stage_list, "opt": opt_sd,
                                   "synthesis": pruned.synthesis.state_dict()})

    try:
        t0 = time.perf_counter()
        with torch.no_grad():
            z = latents_from_seeds(seeds, pruned.style_dim).to(next(pruned.parameters()).device)
            w_teacher, w_student = teacher.style(z), pruned.style(z)
            # Teacher outputs: whole maps of the early stages, nested windows of the others.
            targets = _teacher_cache(teacher, w_teacher, counts[:first_window], progress)
            pyr = None
            if first_window < n_stages:
                pyr = _Pyramid(pruned, first_window, counts[first_window], fit_windows, crop, seed)
                everything = range(len(pyr.latent))
                t_in = {first_window: _store(pyr.first_inputs(targets[first_window - 1]))}
                for k in range(first_window, n_stages):
                    out = _window_forward(teacher, pyr, k, t_in[k], w_teacher, everything)
                    targets.append(_store(out))
                    if k < last:
                        t_in[k + 1] = _store(pyr.next_inputs(k, out))
                    del out
        norms = [max(float(t.float().square().mean()), 1e-30) for t in targets]
        styles = _StyleFit(w_student, w_teacher) if fit == "lstsq" else None

        def teacher_inputs(k: int) -> torch.Tensor | None:
            if k == 0:
                return None
            return t_in[k] if k >= first_window else targets[k - 1][:counts[k]]

        def advance(k: int, x: torch.Tensor | None) -> tuple[torch.Tensor | None, float]:
            """(next stage's inputs from stage k's recovered outputs, stage k's relative error on them)."""
            if k < first_window:
                out, err = _propagate(pruned, k, x, w_student, targets[k], counts[k])
                if k == last:
                    return None, err
                if k + 1 == first_window:
                    return _store(pyr.first_inputs(out)), err
                return out[:counts[k + 1]], err
            items = range(len(pyr.latent))
            out = _window_forward(pruned, pyr, k, x, w_student, items)
            err = _window_error(out, targets[k], pyr.valid(k, items))
            return (_store(pyr.next_inputs(k, out)) if k < last else None), err

        def fit_stage(k: int, windowed: bool, items: list[int]) -> None:
            n_k = counts[k]
            if windowed:
                lat = pyr.latent
                _fit_stage(pruned, teacher, k, x_in.float(), teacher_inputs(k).float(), w_student[lat],
                           w_teacher[lat], pyr.offsets(k, items), pyr.valid(k, items), masks, styles, damp)
            else:
                _fit_stage(pruned, teacher, k, None if k == 0 else x_in.float(),
                           None if k == 0 else teacher_inputs(k).float(), w_student[:n_k], w_teacher[:n_k],
                           None, None, masks, styles, damp)

        x_in = None   # Recovered inputs of the stage being worked on (None for conv1: the constant).
        if start_stage > 0:
            if inputs == "teacher":
                x_in = teacher_inputs(start_stage)
            else:
                for k in range(start_stage):
                    x_in, _ = advance(k, x_in)
        timing["cache"] = time.perf_counter() - t0

        done_calls = 0
        bar = tqdm(total=n_stages * steps, initial=start_stage * steps + start_step, desc="recover", unit="step",
                   disable=not (progress and steps))
        t_last = time.perf_counter()
        for k in range(start_stage, n_stages):
            name, n_k, windowed = names[k], counts[k], k >= first_window
            target = targets[k]
            first = start_step if k == start_stage else 0
            if k == start_stage and stage_stats and stage_stats[-1]["stage"] == name:
                stat = stage_stats.pop()
            else:
                stat = {"stage": name, "latents": n_k, "windows": len(pyr.latent) if windowed else 0,
                        "loss_first": None, "loss_last": None, "seconds": 0.0}
            items = list(range(len(pyr.latent))) if windowed else list(range(n_k))

            if fit == "lstsq" and first == 0:
                t_fit = time.perf_counter()
                with _flush_denormal():
                    fit_stage(k, windowed, items)
                timing["fit"] += time.perf_counter() - t_fit
                stat["seconds"] += time.perf_counter() - t_fit
                t_last = time.perf_counter()

            params = _stage_parameters(pruned, k)
            stage_masks = [masks.get(n) for n, _ in params]
            for _, p in params:
                p.requires_grad_(True)
            opt = torch.optim.Adam([p for _, p in params], lr=lr)
            if k == start_stage and opt_state is not None:
                opt.load_state_dict(opt_state)
            per_step = batch_size * fit_windows if windowed else batch_size
            window_loss, window_n = 0.0, 0
            for step in range(first, steps):
                if stop_after is not None and done_calls >= stop_after:   # Interrupted on purpose (tests).
                    if resume_path is not None:
                        save(k, step, stage_stats + [stat], opt.state_dict())
                    bar.close()
                    stage_stats.append(stat)
                    return stats(False)
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
                idx = torch.randperm(len(items), generator=_rng(seed, k, step))[:per_step].tolist()
                if windowed:
                    out = _block_window(pruned.synthesis.blocks[k - 1], x_in[idx].float(),
                                        w_student[[pyr.latent[i] for i in idx]], pyr.offsets(k, idx), k == last)
                    valid = pyr.valid(k, idx).to(out.device)
                    loss = ((out - target[idx].float()).square() * valid).sum() / (valid.sum() * out.shape[1])
                else:
                    out = _stage_forward(pruned, k, None if k == 0 else x_in[idx].float(), w_student[idx])
                    loss = (out - target[idx].float()).square().mean()
                loss = loss / norms[k]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                with torch.no_grad():
                    for (_, p), m in zip(params, stage_masks):
                        if m is not None and p.grad is not None:
                            p.grad.masked_fill_(~m, 0.0)
                opt.step()
                with torch.no_grad():
                    for (_, p), m in zip(params, stage_masks):
                        if m is not None:
                            p.masked_fill_(~m, 0.0)   # Bitwise +0.0 at every pruned entry.
                value = float(loss.detach())
                if stat["loss_first"] is None:
                    stat["loss_first"] = value
                window_loss, window_n = window_loss + value, window_n + 1
                done, done_calls = step + 1, done_calls + 1
                now = time.perf_counter()
                seconds += now - t_last
                stat["seconds"] += now - t_last
                t_last = now
                bar.update(1)
                bar.set_postfix(stage=name, loss=f"{value:.4f}")
                if done % log_every == 0 or done == steps:
                    record = {"step": k * steps + done, "recover/loss": window_loss / window_n,
                              "recover/stage": float(k), "recover/lr": opt.param_groups[0]["lr"]}
                    stat["loss_last"] = window_loss / window_n
                    window_loss, window_n = 0.0, 0
                    history.append(record)
                    if live is not None:
                        live.step = record["step"]
                        for key, v in record.items():
                            if key != "step":
                                live.log_metric(key, v)
                        live.next_step()
                if resume_path is not None and done % checkpoint_every == 0 and done < steps:
                    save(k, done, stage_stats + [stat], opt.state_dict())
                    t_last = time.perf_counter()
            for _, p in params:
                p.requires_grad_(False)
            del opt
            # The next stage's inputs, and this stage's error on the data it was recovered on.
            t_prop = time.perf_counter()
            if inputs == "teacher":
                _, stat["error"] = advance(k, teacher_inputs(k))
                x_in = teacher_inputs(k + 1) if k < last else None
            else:
                x_in, stat["error"] = advance(k, x_in)
            timing["cache"] += time.perf_counter() - t_prop
            stage_stats.append(stat)
            if resume_path is not None:   # After the last stage too: a finished run (a rerun returns at once).
                save(k + 1, 0, stage_stats, {})
            t_last = time.perf_counter()
        bar.close()
    finally:
        for key, gen in (("pruned", pruned), ("teacher", teacher)):
            training, requires = saved[key]
            for n, p in gen.named_parameters():
                p.requires_grad_(requires[n])
            gen.train(training)
        if live is not None:
            live.end()
    return stats(True)
