"""Post-training reconstruction of a pruned synthesis network: the Optimal Brain Surgeon family, layer by layer.

Every targeted weight here acts linearly on its layer's input: a modulation ``nn.Linear`` on the style w, a pointwise
or 3x3 ``nn.Conv2d`` on im2col patches of its (modulated) input, a depthwise conv on each channel's own 3x3 patch.
So each layer's output error after pruning is a quadratic form in its weights with the Hessian H = X X^T of its
inputs, and the OBS update (Optimal Brain Compression, Frantar et al. 2022; SparseGPT, Frantar & Alistarh 2023) prunes
and re-fits the surviving weights in closed form. The mask choice may weigh each output row by how much it matters to
the image (`compress.importance`), since a layer's rows differ far more in that than its own output error can tell.

Written here from the papers: the libraries that implement SparseGPT (llm-compressor, the SparseGPT reference code)
drive Hugging Face transformer layers (nn.Linear over token sequences) and do not handle depthwise convs, per-channel
Hessians or a synthesis network's block structure.

Calibration (`_calibrate`): the modulation linears all see w, which pruning never changes, so they share one Hessian
over many calibration styles. The convolutions follow in network order, each block's input cached for the calibration
images. One-shot (`layer_hessians` + `reconstruct_with_hessians`): every Hessian from the dense model in one forward,
computed once and reused for every amount. Sequential (`reconstruct_generator`): every conv is calibrated on the
inputs that the already-pruned layers before it produce (a partial forward of its block), then pruned. Its target is
the dense model's output of that layer on the dense model's inputs, not the layer's dense weights on the pruned inputs:
with X the pruned model's inputs and X_d the dense model's at the same pixels, ||W X_d - W' X||^2 = ||W X_d - W* X||^2
+ ||(W* - W') X||^2 for W* = W C H^-1 (C = X_d X^T, H = X X^T), so OBS pruning W* instead of W makes every layer also
undo the error that the pruned layers before it left (W* regularised towards W: `refit_to_dense`) (the asymmetric calibration of GPTAQ, Li et al. 2025, for OBS).

The same Hessians size the int8 storage of each pruned layer (`weight_levels_for_error`): the fewest per-row code
levels whose rounding error stays a set fraction of the error pruning left there.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..models.mobilestylegan import Generator
from .sparse import WEIGHT_LEVELS, dequantize_int8, quantize_int8


def inverse_hessian_factor(hessian: torch.Tensor, dampening: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper Cholesky factor of the dampened H^-1 as [1 or rows, cols, cols], dead-input mask [1 or rows, cols]):
    the part of SparseGPT that depends only on the layer's inputs, shared by every sparsity of that layer."""
    h, dead = _dampened(hessian, dampening)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True), dead


def _dampened(hessian: torch.Tensor, dampening: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(float64 [1 or rows, cols, cols] copy of H with `dampening` x its mean diagonal added, dead-input mask): a dead
    input (never fires) gets a unit diagonal, since its weights cannot matter."""
    h = hessian.detach().to(torch.float64).clone()
    if h.dim() == 2:
        h = h.unsqueeze(0)
    diag = torch.diagonal(h, dim1=-2, dim2=-1)
    dead = diag == 0
    diag[dead] = 1.0
    diag += dampening * diag.mean(dim=-1, keepdim=True)
    return h, dead


def obs_prune(weight: torch.Tensor, hessian: torch.Tensor, zeros: int, dampening: float = 0.01,
              block_size: int = 128, fixed_mask: torch.Tensor | None = None,
              factor: tuple[torch.Tensor, torch.Tensor] | None = None,
              row_weights: torch.Tensor | None = None) -> torch.Tensor:
    """SparseGPT on a [rows, cols] weight: `zeros` entries set to +0.0, the others re-fit to the dense output.

    hessian: [cols, cols] shared by every row, or [rows, cols, cols] (one per row: depthwise kernels). The mask is
    chosen per block of `block_size` columns by the OBS saliency w^2 / [H^-1]_jj^2, the block's share of `zeros` in
    proportion to its width, so exactly `zeros` entries are removed; `fixed_mask` (True = keep) skips that choice and
    only re-fits. dampening: fraction of the mean Hessian diagonal added to it (as in SparseGPT); `factor`: a
    precomputed `inverse_hessian_factor(hessian, dampening)`; `row_weights` ([rows]): each row's saliency is multiplied
    by its weight (how much that output channel matters downstream: `compress.importance`). Returns a new float32
    tensor; the input is unchanged.
    """
    return obs_prune_levels(weight, hessian, [zeros], dampening, block_size, fixed_mask, factor, row_weights)[0]


def obs_prune_levels(weight: torch.Tensor, hessian: torch.Tensor, zeros: list[int], dampening: float = 0.01,
                     block_size: int = 128, fixed_mask: torch.Tensor | None = None,
                     factor: tuple[torch.Tensor, torch.Tensor] | None = None,
                     row_weights: torch.Tensor | None = None) -> torch.Tensor:
    """`obs_prune` at several zero counts at once (one column sweep over a [len(zeros), rows, cols] stack)."""
    rows, cols = weight.shape
    for count in zeros:
        if not 0 <= count <= weight.numel():
            raise ValueError(f"cannot remove {count} of {weight.numel()} weights")
    hinv, dead = factor if factor is not None else inverse_hessian_factor(hessian, dampening)
    hinv = hinv.to(torch.float32)              # the factor is computed in float64, the sweep runs in float32 (as SparseGPT)
    per_row = hinv.shape[0] > 1
    levels = len(zeros)
    w = weight.detach().to(torch.float32).expand(levels, rows, cols).clone()
    w[:, dead.expand(rows, cols)] = 0.0
    row_weights = None if row_weights is None else row_weights.to(torch.float32).view(1, rows, 1)

    removed_so_far = torch.zeros(levels, dtype=torch.long)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        width = end - start
        w_block = w[:, :, start:end].clone()
        hinv_block = hinv[:, start:end, start:end]
        d = torch.diagonal(hinv_block, dim1=-2, dim2=-1)                   # [1 or rows, width]
        if fixed_mask is not None:
            prune_here = (~fixed_mask[:, start:end].to(torch.bool)).expand(levels, rows, width)
        else:
            saliency = w_block.square() / d.square()
            saliency = (saliency if row_weights is None else saliency * row_weights).reshape(levels, -1)
            order = torch.argsort(saliency, dim=1, stable=True)
            prune_here = torch.zeros(levels, rows * width, dtype=torch.bool)
            for level, count in enumerate(zeros):
                target = round(count * end / cols) - int(removed_so_far[level])   # exact total over all blocks
                prune_here[level, order[level, :target]] = True
            prune_here = prune_here.view(levels, rows, width)
        removed_so_far += prune_here.reshape(levels, -1).sum(dim=1)
        # Column-major copies ([width, levels, rows]): each step reads and updates whole contiguous columns.
        wt = w_block.permute(2, 0, 1).contiguous()
        keep_t = (~prune_here).permute(2, 0, 1).to(torch.float32)
        hinv_t = hinv_block.permute(1, 2, 0).contiguous()                   # [width, width, 1 or rows]
        errors_t = torch.empty_like(wt)
        for i in range(width):
            col = wt[i]
            err = col * (1.0 - keep_t[i]) / hinv_t[i, i]
            wt[i:] -= hinv_t[i, i:].unsqueeze(1) * err
            wt[i] = col * keep_t[i]                      # exactly zero where pruned, whatever the rounding above
            errors_t[i] = err
        w_block = wt.permute(1, 2, 0)
        errors = errors_t.permute(1, 2, 0)
        w[:, :, start:end] = w_block
        if end < cols:
            later = hinv[:, start:end, end:]
            w[:, :, end:] -= (errors @ later[0]) if not per_row else torch.einsum("lrw,rwn->lrn", errors, later)
    out = w
    out[out == 0] = 0.0                                                       # -0.0 -> +0.0
    return out


MAX_LOW_RES_IMAGES = 1024   # conv1 at 4 px: 16k patches already over-determine its 4608-wide Hessian


class _Stop(Exception):
    """Raised by a calibration hook once its layer's input has been recorded (the rest of the forward is skipped)."""


def _conv_columns(conv: nn.Conv2d, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """im2col patches of `x` for `conv` at flat pixel positions `idx` (all if None), : [B, I*k*k, L]
    (depthwise: [B, I, k*k, L]). Only the sampled patches are gathered (a whole 512^2 map unfolded is ~1 GB)."""
    k, pad = conv.kernel_size[0], conv.padding[0]
    height, width = x.shape[-2:]
    if idx is None:
        idx = torch.arange(height * width)
    rows, cols = idx // width, idx % width
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    patches = torch.stack([padded[:, :, rows + dy, cols + dx] for dy in range(k) for dx in range(k)], dim=2)
    # [B, I, k*k, L] in unfold's (channel, ky, kx) order
    return patches if conv.groups > 1 else patches.flatten(1, 2)


def _second_moment(conv: nn.Conv2d, cols: torch.Tensor) -> torch.Tensor:
    """Sum of x x^T over patches: [I*k*k, I*k*k], or [I, k*k, k*k] for a depthwise conv."""
    return _cross_moment(conv, cols, cols)


def _random_positions(x: torch.Tensor, positions: int, generator: torch.Generator) -> torch.Tensor | None:
    """At most `positions` random flat pixel indices of `x` (None: every pixel)."""
    pixels = x.shape[-1] * x.shape[-2]
    return torch.randperm(pixels, generator=generator)[:positions] if pixels > positions else None


class _HessianHook:
    """Accumulates H = E[patch patch^T] of a conv's input, at most `positions` random pixels per call."""

    def __init__(self, conv: nn.Conv2d, positions: int, seed: int):
        self.conv, self.positions = conv, positions
        self.generator = torch.Generator().manual_seed(seed)
        self.total, self.count = 0.0, 0
        self.handle = conv.register_forward_pre_hook(self)

    def __call__(self, _module, args):
        x = args[0].detach()
        cols = _conv_columns(self.conv, x, _random_positions(x, self.positions, self.generator))
        self.total = self.total + _second_moment(self.conv, cols).to(torch.float64)   # float32 products
        self.count += cols.shape[0] * cols.shape[-1]

    def result(self) -> torch.Tensor:
        self.handle.remove()
        return self.total / self.count


def _run_all(run, inputs: list) -> list:
    outputs = []
    for x, w in inputs:
        try:
            outputs.append(run(x, w))
        except _Stop:
            pass
    return outputs


def _cross_moment(conv: nn.Conv2d, dense_cols: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Sum of x_d x^T over patches (dense model's patch, pruned model's patch at the same pixel)."""
    if conv.groups > 1:
        return torch.einsum("bcil,bcjl->cij", dense_cols, cols)
    flat_d = dense_cols.transpose(0, 1).reshape(dense_cols.shape[1], -1)
    return flat_d @ cols.transpose(0, 1).reshape(cols.shape[1], -1).T


class _PairedHook:
    """Accumulates, over the same random pixels of one conv's input in the dense model (x_d) and in the model being
    pruned (x): H = E[x x^T], C = E[x_d x^T] and H_d = E[x_d x_d^T]. Call the dense model first, then the pruned one,
    on the same batch; each call stops its forward at the conv."""

    def __init__(self, conv: nn.Conv2d, dense_conv: nn.Conv2d, positions: int, seed: int):
        self.conv, self.positions = conv, positions
        self.generator = torch.Generator().manual_seed(seed)
        self.idx, self.dense_cols = None, None
        self.hessian, self.cross, self.dense_hessian, self.count = 0.0, 0.0, 0.0, 0
        self.handles = [dense_conv.register_forward_pre_hook(self.dense), conv.register_forward_pre_hook(self.pruned)]

    def dense(self, _module, args):
        x = args[0].detach()
        self.idx = _random_positions(x, self.positions, self.generator)
        self.dense_cols = _conv_columns(self.conv, x, self.idx)
        raise _Stop

    def pruned(self, _module, args):
        cols = _conv_columns(self.conv, args[0].detach(), self.idx)
        self.hessian = self.hessian + _second_moment(self.conv, cols).to(torch.float64)
        self.cross = self.cross + _cross_moment(self.conv, self.dense_cols, cols).to(torch.float64)
        self.dense_hessian = self.dense_hessian + _second_moment(self.conv, self.dense_cols).to(torch.float64)
        self.count += cols.shape[0] * cols.shape[-1]
        raise _Stop

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for handle in self.handles:
            handle.remove()
        return self.hessian / self.count, self.cross / self.count, self.dense_hessian / self.count


def refit_to_dense(weight: torch.Tensor, hessian: torch.Tensor, cross: torch.Tensor,
                   dampening: float = 0.01) -> torch.Tensor:
    """For a [rows, cols] weight W: W' = W + W (C - H) (H + lambda I)^-1, the weights that on the pruned model's inputs
    best reproduce the dense layer's output on the dense inputs, with a ridge penalty lambda ||W' - W||^2 (lambda:
    `dampening` times the mean diagonal of H, as in `inverse_hessian_factor`), so poorly excited input directions keep
    their dense weights instead of shrinking to zero. Per-row moments ([rows, cols, cols]) for depthwise kernels."""
    damped, _ = _dampened(hessian, dampening)
    h = hessian.detach().to(torch.float64).reshape(damped.shape)
    c = cross.detach().to(torch.float64).reshape(damped.shape)
    w = weight.detach().to(torch.float64)
    if h.shape[0] == 1:
        correction = torch.linalg.solve(damped[0], (w @ (c[0] - h[0])).T).T
    else:
        correction = torch.linalg.solve(damped, torch.einsum("ri,rij->rj", w, c - h).unsqueeze(-1)).squeeze(-1)
    return (w + correction).to(torch.float32)


def _prune_layer_(module: nn.Module, hessian: torch.Tensor, zeros: int, dampening: float,
                  fixed_mask: torch.Tensor | None, cross: torch.Tensor | None = None,
                  row_weights: torch.Tensor | None = None) -> None:
    weight = module.weight
    rows, cols = weight.shape[0], weight[0].numel()     # depthwise [I, 1, k, k]: one row (and Hessian) per channel
    mask2d = None if fixed_mask is None else fixed_mask.reshape(rows, cols)
    start = weight.reshape(rows, cols) if cross is None else refit_to_dense(weight.reshape(rows, cols), hessian,
                                                                             cross, dampening)
    new = obs_prune(start, hessian, zeros, dampening, fixed_mask=mask2d, row_weights=row_weights)
    with torch.no_grad():
        weight.copy_(new.view_as(weight))


def _block_runners(gen: Generator, noise_mode: str = "fixed"):
    """The synthesis net as a chain of stages x -> x: conv1, then every block (its frequency head included)."""
    syn = gen.synthesis

    def first(x, w):
        return syn.conv1(x, w, noise_mode)

    stages = [(first, [syn.conv1.conv.conv])]
    for block in syn.blocks:
        convs = [block.conv1.conv.depthwise, block.conv1.conv.pointwise,
                 block.conv2.conv.depthwise, block.conv2.conv.pointwise]
        if block.to_img is not None:
            convs.append(block.to_img.conv.conv)

        def run(x, w, block=block):
            return block(x, w, noise_mode)[0]
        stages.append((run, convs))
    return stages


def _synthesis_weights(gen: Generator) -> dict[str, nn.Module]:
    return {f"synthesis.{n}.weight": m for n, m in gen.synthesis.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))}


@torch.no_grad()
def _calibrate(gen: Generator, names, styles: torch.Tensor, image_styles: torch.Tensor, positions: int, seed: int,
               batch_size: int, visit, sequential: bool, progress: bool, desc: str) -> None:
    """Call visit(name, module, hessian[, (cross, dense_hessian)]) for each named synthesis weight in network order.

    The modulation linears come first: they all see w, which pruning never changes, so they share one Hessian over
    `styles`. A conv's Hessian is E[patch patch^T] of its input. sequential: taken on the inputs produced by everything
    visited before it (which `visit` may have pruned: each conv costs a partial forward of its block and one of the
    model as it was at the start, whose inputs at the same pixels give the cross moment C = E[x_d x^T] and H_d); else
    on the inputs of the model as it was at the start (one forward in all). A stage at low resolution (conv1 at 4 px, the
    first blocks) has fewer pixels than `positions`: it is calibrated on more images, enough for `positions` pixels,
    taken from `styles` after `image_styles` (cheap at that size).
    """
    modules = _synthesis_weights(gen)
    unknown = set(names) - set(modules)
    if unknown:
        raise ValueError(f"not synthesis conv/linear weights: {sorted(unknown)}")
    dense_stages = _block_runners(copy.deepcopy(gen)) if sequential else None   # before `visit` changes anything
    bar = tqdm(total=len(names), desc=desc, unit="layer", disable=not progress)
    w64 = styles.to(torch.float64)
    style_hessian = w64.T @ w64 / w64.shape[0]
    for name, module in modules.items():
        if isinstance(module, nn.Linear) and name in names:
            visit(name, module, style_hessian)
            bar.update(1)

    stages = _block_runners(gen)
    counts = [max(len(image_styles), min(len(styles), MAX_LOW_RES_IMAGES, math.ceil(positions / (16 * 4 ** i))))
              for i in range(len(stages))]
    calibration = torch.cat([image_styles, styles])[:counts[0]]
    x = [gen.synthesis.const.expand(len(c), -1, -1, -1) for c in calibration.split(256)]
    x_dense = x
    batches = list(calibration.split(256))
    for stage_index, (run, convs) in enumerate(stages):
        size = max(batch_size, 4096 // (16 * 4 ** stage_index))
        x_dense, _ = _rebatch(x_dense, batches, counts[stage_index], size)
        x, batches = _rebatch(x, batches, counts[stage_index], size)
        inputs = list(zip(x, batches))
        targeted = [(next(n for n, m in modules.items() if m is conv), i, conv) for i, conv in enumerate(convs)]
        targeted = [t for t in targeted if t[0] in names]
        if sequential:
            dense_run, dense_convs = dense_stages[stage_index]
            for name, conv_index, conv in targeted:
                hook = _PairedHook(conv, dense_convs[conv_index], positions, seed + 1000 * stage_index + conv_index)
                for (x_batch, w), x_dense_batch in zip(inputs, x_dense):
                    _run_all(dense_run, [(x_dense_batch, w)])
                    _run_all(run, [(x_batch, w)])
                hessian, cross, dense_hessian = hook.result()
                visit(name, conv, hessian, (cross, dense_hessian))
                bar.update(1)
            x = _run_all(run, inputs)
            x_dense = _run_all(dense_run, list(zip(x_dense, batches)))
        else:
            hooks = [_HessianHook(conv, positions, seed + 1000 * stage_index + i) for _, i, conv in targeted]
            x = _run_all(run, inputs)
            for (name, _, conv), hook in zip(targeted, hooks):
                visit(name, conv, hook.result())
                bar.update(1)
    bar.close()


def layer_hessians(gen: Generator, names: list[str], styles: torch.Tensor, image_styles: torch.Tensor,
                   positions: int = 65536, seed: int = 0, batch_size: int = 2,
                   progress: bool = True) -> dict[str, torch.Tensor]:
    """{name: input Hessian of that layer on the (unmodified) model's calibration inputs} (see `_calibrate`)."""
    hessians: dict[str, torch.Tensor] = {}
    _calibrate(gen, names, styles, image_styles, positions, seed, batch_size,
               lambda name, _module, hessian: hessians.__setitem__(name, hessian), False, progress, "hessians")
    return hessians


def reconstruct_generator(gen: Generator, zeros: dict[str, int], styles: torch.Tensor, image_styles: torch.Tensor,
                          dampening: float = 0.01, positions: int = 65536, seed: int = 0,
                          fixed_masks: dict[str, torch.Tensor] | None = None, batch_size: int = 2,
                          progress: bool = True, importance: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Prune `gen`'s synthesis weights in place, sequentially: `zeros[name]` entries of each named tensor (names as in
    `gen.state_dict()`), every survivor re-fit by OBS on inputs that the already-pruned layers produce.

    styles: [N, style_dim] w's for the modulation linears' shared Hessian; image_styles: [M, style_dim] w's whose
    forward passes calibrate the convolutions (at most `positions` random pixels per image and layer), each conv
    re-fit towards the dense model's output of that layer (module docstring). fixed_masks (name -> bool, True = keep):
    keep those masks and only re-fit. importance (name -> [rows], `compress.importance.output_importance`): weigh each
    layer's mask choice by how much its output channels matter to the image (None: every row alike). Returns
    {name: relative output error of the layer on its calibration inputs} (||W X_d - W' X||^2 / ||W X_d||^2 from the
    moments; X_d = X for the modulation linears).
    """
    errors: dict[str, float] = {}
    _calibrate(gen, list(zeros), styles, image_styles, positions, seed, batch_size,
               _pruner(zeros, dampening, fixed_masks or {}, errors, importance or {}), True, progress, "reconstruct")
    return errors


def reconstruct_with_hessians(gen: Generator, zeros: dict[str, int], hessians: dict[str, torch.Tensor],
                              dampening: float = 0.01, fixed_masks: dict[str, torch.Tensor] | None = None,
                              progress: bool = True, importance: dict[str, torch.Tensor] | None = None
                              ) -> dict[str, float]:
    """`reconstruct_generator` in one shot: every layer re-fit on the dense model's inputs (`layer_hessians`, computed
    once for every amount) instead of the pruned predecessors' outputs."""
    missing = set(zeros) - set(hessians)
    if missing:
        raise ValueError(f"no calibration Hessian for {sorted(missing)}")
    errors: dict[str, float] = {}
    prune = _pruner(zeros, dampening, fixed_masks or {}, errors, importance or {})
    modules = _synthesis_weights(gen)
    for name in tqdm([n for n in modules if n in zeros], desc="reconstruct", unit="layer", disable=not progress):
        prune(name, modules[name], hessians[name])
    return errors


def _pruner(zeros: dict[str, int], dampening: float, fixed_masks: dict, errors: dict, importance: dict):
    def prune(name, module, hessian, to_dense=None):
        dense = module.weight.detach().clone()
        cross = None if to_dense is None else to_dense[0]
        _prune_layer_(module, hessian, zeros[name], dampening, fixed_masks.get(name), cross, importance.get(name))
        errors[name] = relative_output_error(dense, module.weight.detach(), hessian, to_dense)
    return prune


def sensitivity_profile(weights: dict[str, torch.Tensor], hessians: dict[str, torch.Tensor],
                        levels: tuple[float, ...], dampening: float = 0.01,
                        progress: bool = True) -> dict[str, list[float]]:
    """{name: relative output error of that layer alone, OBS-pruned to each of `levels`} on its calibration Hessian."""
    profile: dict[str, list[float]] = {}
    for name, weight in tqdm(weights.items(), desc="sensitivity", unit="layer", disable=not progress):
        flat = weight.detach().reshape(weight.shape[0], -1)
        pruned = obs_prune_levels(flat, hessians[name], [round(level * weight.numel()) for level in levels],
                                  dampening)
        profile[name] = [relative_output_error(flat, p, hessians[name]) for p in pruned]
    return profile


def _rebatch(x: list, w: list, count: int, batch_size: int) -> tuple[list, list]:
    """The first `count` cached (input, style) pairs, regrouped into batches of `batch_size`."""
    x_all, w_all = torch.cat(x)[:count], torch.cat(w)[:count]
    return list(x_all.split(batch_size)), list(w_all.split(batch_size))


def _quadratic_form(a: torch.Tensor, moment: torch.Tensor, b: torch.Tensor) -> float:
    """sum over rows r of a_r^T M b_r in float64, M shared [n, n] or one per row [rows, n, n]."""
    rows = a.shape[0]
    pattern = "ri,rij,rj->" if moment.dim() == 3 else "ri,ij,rj->"
    return float(torch.einsum(pattern, a.reshape(rows, -1).to(torch.float64), moment.to(torch.float64),
                              b.reshape(rows, -1).to(torch.float64)))


def output_energy(weight: torch.Tensor, hessian: torch.Tensor) -> float:
    """||W X||^2 from the moment H = X X^T."""
    return _quadratic_form(weight, hessian, weight)


def relative_output_error(dense: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor,
                          to_dense: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """||W X_d - W' X||^2 / ||W X_d||^2 from the moments H = X X^T, and with to_dense = (C = X_d X^T, H_d = X_d X_d^T)
    (else X_d = X)."""
    if to_dense is None:
        num = output_energy(dense.to(torch.float64) - pruned.to(torch.float64), hessian)
        denom = output_energy(dense, hessian)
    else:
        cross, dense_hessian = to_dense
        denom = output_energy(dense, dense_hessian)
        num = denom - 2 * _quadratic_form(dense, cross, pruned) + output_energy(pruned, hessian)
    return num / denom if denom > 0 else math.nan


def weight_levels_for_error(weights: dict[str, torch.Tensor], dense: dict[str, torch.Tensor],
                            hessians: dict[str, torch.Tensor], ratio: float,
                            importance: dict[str, torch.Tensor] | None = None) -> dict[str, int]:
    """Name -> the fewest levels in `WEIGHT_LEVELS` whose per-row rounding of the (pruned) `weights[name]` adds at most
    `ratio` x the output error that pruning left in that layer: ||(W' - Q(W')) X||^2 <= ratio x ||(W - W') X||^2 for
    the dense weights W, from the layer's calibration Hessian H = X X^T; 127 where no level does (or the layer is
    dense). Rounding errors are independent of the pruning error, so the layer's error grows by at most that
    fraction: a heavily pruned layer is stored with few bits, a lightly pruned one keeps 8. With `importance`
    (name -> [rows]) both errors are the image's (each row's counted by its output importance, as the mask choice):
    the masks move the pruning error to the rows that matter least, where an unweighted budget would let the rounding
    spread onto the rows that matter most."""
    levels = {}
    for name, weight in weights.items():
        hessian = hessians[name]
        row_scale = _row_scale(weight, None if importance is None else importance.get(name))
        pruning_error = output_energy(row_scale * (dense[name].to(torch.float64) - weight.to(torch.float64)), hessian)
        levels[name] = 127
        for candidate in WEIGHT_LEVELS:
            q, scale = quantize_int8(weight, levels=candidate)
            rounding = weight.to(torch.float64) - dequantize_int8(q, scale).to(torch.float64)
            if output_energy(row_scale * rounding, hessian) <= ratio * pruning_error:
                levels[name] = candidate
                break
    return levels


def _row_scale(weight: torch.Tensor, row_weights: torch.Tensor | None) -> torch.Tensor | float:
    """sqrt(row weight) shaped to multiply `weight`'s rows (1.0 without weights): ||scale * dW X||^2 counts row r's
    error times its weight."""
    if row_weights is None:
        return 1.0
    return row_weights.to(torch.float64).sqrt().view(-1, *([1] * (weight.dim() - 1)))
