"""Build MobileStyleGAN and BlazeStyleGAN-style students for distillation, initialise them, export the inference model.

A student always shares the teacher's mapping network, truncation centre and fixed noise maps (student and teacher
see the same w and the same noise). `init = teacher` also copies the synthesis trunk of a MobileStyleGAN teacher
(const, conv1, blocks 0..n-1 with their noise strengths; a head only where the teacher has one of the same kind at
that block). Stages narrower than the teacher's are channel-selected from it (`channel_selection`) and, all but the
last block, fitted block-wise to its activations (`fit_narrowed_stages`). Heads the pretrained export lacks are new:
random, or fitted in closed form (`fit_heads_lstsq`).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from tqdm import tqdm

from ..errors import UserError
from ..models.mobilestylegan import HEADS, Generator, GeneratorConfig
from .losses import image_pyramid
from .teachers import teacher_noise_by_layer


def scaled_channels(channels: list[int] | tuple[int, ...], width: float) -> tuple[int, ...]:
    """`student.channels` times `student.width`, each rounded to a multiple of 4 (the Haar bands), at least 4."""
    return tuple(int(c) if width == 1 else max(4, 4 * round(c * width / 4)) for c in channels)


def build_student(config: GeneratorConfig, teacher: nn.Module, init: str, seed: int = 0) -> tuple[Generator, set[str]]:
    """Returns the student (train mode) and the names of its parameters copied from the teacher's synthesis net.

    With `init = teacher` every student width must be at most the teacher's. A stage (conv1 with `const`, or a
    block) narrower than the teacher's on either side is initialised from the teacher's channels that carry the most
    signal (`channel_selection`, chained from stage to stage) and counts as new: its parameters are not in the
    returned set. Heads are copied only between students and teachers of the same `arch`.
    """
    if config.style_dim != teacher.style_dim:
        raise UserError(f"student style_dim {config.style_dim} != teacher style_dim {teacher.style_dim}")
    if config.resolution > teacher.resolution:
        raise UserError(f"student.resolution {config.resolution} exceeds the teacher's {teacher.resolution} px")
    torch.manual_seed(seed)
    student = Generator(config)
    student.mapping.load_state_dict(teacher.mapping.state_dict())
    student.mapping.requires_grad_(False)
    student.w_avg.copy_(teacher.w_avg)
    pretrained: set[str] = set()
    derived: set[str] = set()
    if init == "teacher":
        if not isinstance(teacher, Generator):
            raise UserError("student.init = teacher copies a MobileStyleGAN trunk; a StyleGAN2 teacher has none "
                            "(use student.init = scratch; the mapping network and noise are shared either way)")
        teacher_widths = teacher.config.channels[:config.num_blocks + 1]
        if any(s > t for s, t in zip(config.used_channels, teacher_widths)):
            raise UserError(f"student.init = teacher: the student's widths {list(config.used_channels)} "
                            f"(student.channels x student.width) exceed the teacher's {list(teacher_widths)}; "
                            f"lower student.channels or student.width, or use student.init = scratch")
        narrowed = narrowed_stages(config, teacher.config)
        source = teacher.synthesis.state_dict()
        copied = {k: source[k] for k in student.synthesis.state_dict()
                  if k in source and stage_of(k) not in narrowed
                  and (config.arch == teacher.config.arch or not _is_head_key(k))}
        student.synthesis.load_state_dict(copied, strict=False)
        param_names = {n for n, _ in student.synthesis.named_parameters()}
        pretrained = {f"synthesis.{k}" for k in copied if k in param_names}
        if narrowed:
            derived = apply_selection(student, teacher, channel_selection(config, teacher))
    elif init != "scratch":
        raise ValueError(f"unknown student.init {init!r}")
    tame_new_modulations(student, pretrained | derived)
    share_noise(student, teacher)
    return student.train(), pretrained


def stage_of(key: str) -> int:
    """The synthesis stage a synthesis state-dict key belongs to: -1 for const, conv1 and to_img1, i for blocks.i."""
    return int(key.split(".")[1]) if key.startswith("blocks.") else -1


def _is_head_key(key: str) -> bool:
    return key.startswith("to_img1.") or ".to_img." in key


def narrowed_stages(config: GeneratorConfig, teacher: GeneratorConfig) -> list[int]:
    """Stages (-1 = conv1, i = block i) whose input or output is narrower than the teacher's, in order."""
    s, t = config.used_channels, teacher.channels
    return [i for i in range(-1, config.num_blocks) if s[i + 1] < t[i + 1] or (i >= 0 and s[i] < t[i])]


def _rms(h: torch.Tensor) -> torch.Tensor:
    return h.square().mean(dim=(0, 2, 3)).sqrt()


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    return torch.argsort(score, descending=True)[:k].sort().values


def _packed(groups: torch.Tensor, channels: int) -> torch.Tensor:
    """Channel indices of Haar groups in the packed layout of a `channels`-wide tensor: the LL channels of the
    groups, then their three bands each (models.wavelets)."""
    bands = (channels // 4 + 3 * groups[:, None] + torch.arange(3)).flatten()
    return torch.cat((groups, bands))


@torch.no_grad()
def channel_selection(config: GeneratorConfig, teacher: Generator, num_latents: int = 16) -> dict[str, torch.Tensor]:
    """Which teacher channels every student stage keeps (structured channel selection, chained stage to stage).

    Scores are teacher activations' RMS over `num_latents` latents times the norm of the weights that read them.
    A stage output that a block reads is kept in whole Haar groups (the block's IDWT reads LL, LH, HL, HH of one
    channel together), scored by the RMS of the IDWT output times the weights of the block's conv1 that read it;
    the last block's output is kept by its RMS. Returns {"const", "-1" (conv1's output), "i.1" (block i's conv1
    output), "i" (block i's output)}: teacher channel indices, in the order the student stores them.
    """
    net, s = teacher.synthesis, config.used_channels
    w = teacher.style(torch.randn(num_latents, teacher.style_dim, generator=torch.Generator().manual_seed(0)))

    def keep_output(h: torch.Tensor, index: int) -> torch.Tensor:
        """Output channels of stage `index` (activations h) that the student keeps."""
        width = s[index + 1]
        if index == config.num_blocks - 1:
            return _top(_rms(h), width) if width < h.shape[1] else torch.arange(h.shape[1])
        nxt = net.blocks[index + 1].conv1.conv
        reads = nxt.depthwise.weight.flatten(1).norm(dim=1) * nxt.pointwise.weight.flatten(1).norm(dim=0)
        groups = torch.arange(h.shape[1] // 4)
        if width < h.shape[1]:
            groups = _top(_rms(net.blocks[index + 1].up(h, w)) * reads, width // 4)
        return _packed(groups, h.shape[1])

    conv = net.conv1.conv
    const_reads = conv.conv.weight.transpose(0, 1).flatten(1).norm(dim=1)
    keeps = {"const": _top(_rms(net.const) * const_reads, s[0])}
    x = net.conv1(net.const.expand(num_latents, -1, -1, -1), w, "fixed")
    keeps["-1"] = keep_output(x, -1)
    for i in range(config.num_blocks):
        tb = net.blocks[i]
        h1 = tb.conv1(tb.up(x, w), w, "fixed")
        x = tb.conv2(h1, w, "fixed")
        c2 = tb.conv2.conv
        reads = c2.depthwise.weight.flatten(1).norm(dim=1) * c2.pointwise.weight.flatten(1).norm(dim=0)
        keeps[f"{i}.1"] = _top(_rms(h1) * reads, s[i + 1])
        keeps[str(i)] = keep_output(x, i)
    return keeps


@torch.no_grad()
def apply_selection(student: Generator, teacher: Generator, keeps: dict[str, torch.Tensor]) -> set[str]:
    """Load the selected teacher channels into every narrowed stage of the student; returns the parameter names so
    initialised. A head is selected too where the teacher has one of the same kind at that stage."""
    t, config = teacher.synthesis.state_dict(), student.config
    picked = {}

    def head(prefix: str, out: torch.Tensor) -> None:
        if config.arch == teacher.config.arch and f"{prefix}.conv.conv.weight" in t:
            picked.update({f"{prefix}.conv.modulation.weight": t[f"{prefix}.conv.modulation.weight"][out],
                           f"{prefix}.conv.modulation.bias": t[f"{prefix}.conv.modulation.bias"][out],
                           f"{prefix}.conv.conv.weight": t[f"{prefix}.conv.conv.weight"][:, out],
                           f"{prefix}.conv.conv.bias": t[f"{prefix}.conv.conv.bias"]})

    def styled_dwconv(prefix: str, inp: torch.Tensor, out: torch.Tensor) -> None:
        """A StyledConv(ModulatedDWConv2d) restricted to input channels `inp` and output channels `out`."""
        c = f"{prefix}.conv"
        picked.update({f"{c}.modulation.weight": t[f"{c}.modulation.weight"][inp],
                       f"{c}.modulation.bias": t[f"{c}.modulation.bias"][inp],
                       f"{c}.depthwise.weight": t[f"{c}.depthwise.weight"][inp],
                       f"{c}.pointwise.weight": t[f"{c}.pointwise.weight"][out][:, inp],
                       f"{c}.pointwise.bias": t[f"{c}.pointwise.bias"][out],
                       f"{prefix}.noise.noise_strength": t[f"{prefix}.noise.noise_strength"]})

    stages = narrowed_stages(config, teacher.config)
    if -1 in stages:
        const, out = keeps["const"], keeps["-1"]
        picked.update({"const": t["const"][:, const],
                       "conv1.conv.modulation.weight": t["conv1.conv.modulation.weight"][const],
                       "conv1.conv.modulation.bias": t["conv1.conv.modulation.bias"][const],
                       "conv1.conv.conv.weight": t["conv1.conv.conv.weight"][out][:, const],
                       "conv1.conv.conv.bias": t["conv1.conv.conv.bias"][out],
                       "conv1.noise.noise_strength": t["conv1.noise.noise_strength"]})
        if student.synthesis.to_img1 is not None:
            head("to_img1", out)
    for i in (i for i in stages if i >= 0):
        b = f"blocks.{i}"
        inp, mid, out = keeps[str(i - 1)], keeps[f"{i}.1"], keeps[str(i)]
        groups = inp[:len(inp) // 4]           # The LL channels: the Haar groups conv1 reads after the IDWT.
        picked.update({f"{b}.up.modulation.weight": t[f"{b}.up.modulation.weight"][inp],
                       f"{b}.up.modulation.bias": t[f"{b}.up.modulation.bias"][inp]})
        styled_dwconv(f"{b}.conv1", groups, mid)
        styled_dwconv(f"{b}.conv2", mid, out)
        if student.synthesis.blocks[i].to_img is not None:
            head(f"{b}.to_img", out)
    student.synthesis.load_state_dict(picked, strict=False)
    return {f"synthesis.{k}" for k in picked}


def fitted_stages(config: GeneratorConfig, teacher: GeneratorConfig) -> list[int]:
    """The narrowed stages `fit_narrowed_stages` trains: all but the last block, which trains through the head."""
    return [i for i in narrowed_stages(config, teacher) if i < config.num_blocks - 1]


def stage_parameter_names(student: Generator, stages: list[int]) -> set[str]:
    """Parameter names of the given stages, heads excluded."""
    return {f"synthesis.{n}" for n, _ in student.synthesis.named_parameters()
            if stage_of(n) in stages and not _is_head_key(n)}


def _run_stage(net: nn.Module, index: int, x: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor:
    if index < 0:
        return net.conv1(net.const.expand(len(w), -1, -1, -1), w, "fixed")
    b = net.blocks[index]
    return b.conv2(b.conv1(b.up(x, w), w, "fixed"), w, "fixed")


def fit_narrowed_stages(student: Generator, teacher: Generator, z: torch.Tensor, truncation: float, steps: int,
                        lr: float, batch_size: int, seed: int = 0, progress: bool = True) -> dict[str, dict]:
    """Block-wise feature distillation of the narrowed stages (`fitted_stages`), in order.

    Each stage is trained (Adam, cosine lr, `steps` steps of `batch_size`) to reproduce the teacher stage's selected
    output channels (`channel_selection`) from the student's own output of the stage before, so it learns to
    correct what the narrower stages before it lost. The teacher's activations for the latents `z` are computed
    once, and each stage's inputs once (half precision, on the CPU): the cost is that of the narrowed stages alone.
    Returns {stage: {"rel_error_init", "rel_error"}}: mean squared error over the mean square of the target.
    """
    stages = fitted_stages(student.config, teacher.config)
    if not stages:
        return {}
    device = next(student.parameters()).device
    keeps = channel_selection(student.config, teacher)
    tn, sn = teacher.synthesis, student.synthesis

    def batched(fn, n: int) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([fn(slice(i, i + batch_size)).half().cpu() for i in range(0, n, batch_size)])

    with torch.no_grad():
        w = torch.cat([teacher.style(z[i:i + batch_size].to(device), truncation) for i in range(0, len(z), batch_size)])
    targets = {}
    for k in stages:
        def teacher_out(sl, k=k):
            x = None
            for j in range(-1, k + 1):
                x = _run_stage(tn, j, x, w[sl])
            return x[:, keeps[str(k)].to(device)]
        targets[k] = batched(teacher_out, len(z))

    @torch.no_grad()
    def rel_error(k: int, feats: torch.Tensor | None) -> float:
        err = ref = 0.0
        for i in range(0, len(z), batch_size):
            x = feats[i:i + batch_size].to(device).float() if feats is not None else None
            t = targets[k][i:i + batch_size].to(device).float()
            err += float((_run_stage(sn, k, x, w[i:i + batch_size]) - t).double().square().sum())
            ref += float(t.double().square().sum())
        return err / ref

    stats, feats = {}, None
    generator = torch.Generator().manual_seed(seed)
    for k in range(-1, stages[-1] + 1):
        if k in stages:
            names = stage_parameter_names(student, [k])
            params = [p for n, p in student.named_parameters() if n in names]
            flags = [p.requires_grad for p in params]
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.Adam(params, lr=lr)
            before = rel_error(k, feats)
            for step in tqdm(range(steps), desc=f"stage {k} fit", unit="step", disable=not progress):
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
                idx = torch.randint(len(z), (batch_size,), generator=generator)
                x = feats[idx].to(device).float() if feats is not None else None
                loss = (_run_stage(sn, k, x, w[idx]) - targets[k][idx].to(device).float()).square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
                p.grad = None
            stats[str(k)] = {"rel_error_init": before, "rel_error": rel_error(k, feats)}
        if k == stages[-1]:
            break
        prev = feats
        feats = batched(lambda sl: _run_stage(sn, k, prev[sl].to(device).float() if prev is not None else None,
                                              w[sl]), len(z))
    return stats


@torch.no_grad()
def tame_new_modulations(student: Generator, pretrained: set[str]) -> None:
    """Scale new modulation weights by 1/sqrt(style_dim) (what equalized lr does at run time).

    MobileStyleGAN's modulations are plain N(0, 1) Linears; with |w| ~ 10 every block multiplies the activations
    by ~|A w|, so a randomly initialised 256-px student starts with outputs of ~1e15. Scaled, they start at O(0.1).
    """
    for name, module in student.synthesis.named_modules():
        if isinstance(module, nn.Linear) and f"synthesis.{name}.weight" not in pretrained:
            module.weight.mul_(module.in_features ** -0.5)


@torch.no_grad()
def share_noise(student: Generator, teacher: nn.Module) -> None:
    """Copy the teacher's fixed noise maps into the student's NoiseInjection layers (matched by path)."""
    maps = teacher_noise_by_layer(teacher)
    for name, module in student.synthesis.named_modules():
        path = f"synthesis.{name}"
        if not hasattr(module, "noise_map"):
            continue
        if path not in maps:
            raise UserError(f"teacher has no noise map for student layer {path}")
        noise, _strength = maps[path]  # Strengths come with the trunk (init = teacher) or are learned.
        if noise.shape[-1] != module.noise_map.shape[-1]:
            raise UserError(f"noise size mismatch at {path}: teacher {tuple(noise.shape)}, "
                            f"student {tuple(module.noise_map.shape)}")
        module.noise_map.copy_(noise.reshape(module.noise_map.shape))


def head_modules(student: Generator) -> list[tuple[str, nn.Module]]:
    """(path, head) of every head (`FrequencyHead` or `UpToRGB`), shallowest first."""
    return [(f"synthesis.{n}", m) for n, m in student.synthesis.named_modules() if isinstance(m, tuple(HEADS.values()))]


@torch.no_grad()
def fit_heads_lstsq(student: Generator, w: torch.Tensor, targets: torch.Tensor, names: set[str] | None = None,
                    batch_size: int = 4, ridge: float = 1e-4,
                    inputs: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Closed-form init of heads: ridge regression from head input to the teacher's image pyramid, in the head's
    output layout (`from_rgb`: Haar coefficients for a frequency head, pixel-unshuffled RGB for an UpToRGB head).

    With the modulation set to a constant (A = 0, a = 1) a head is the linear map out = W (scale * x) + b, so the
    least-squares W, b given the (fixed) trunk features is one solve. Training then learns the style-dependent part.
    names: head module paths to fit (default: all). inputs: precomputed head inputs by name (skips the trunk).
    Returns the fitted L2 on the fitting set per head.
    """
    heads = [(n, h) for n, h in head_modules(student) if names is None or n in names]
    if not heads:
        return {}
    captured: dict[str, torch.Tensor] = {}
    hooks = [h.register_forward_hook(lambda m, args, out, n=n: captured.__setitem__(n, args[0])) for n, h in heads]
    stats = {n: None for n, _ in heads}
    was_training = student.training
    student.eval()
    try:
        for start in range(0, len(w), batch_size):
            wb, tb = w[start:start + batch_size], targets[start:start + batch_size]
            if inputs is None:
                student.synthesis(wb, noise_mode="fixed")
            else:
                captured.update({n: inputs[n][start:start + batch_size].to(wb.device).float() for n, _ in heads})
            pyramid = image_pyramid(tb.float(), [head.factor * captured[n].shape[-1] for n, head in heads])
            for n, head in heads:
                x = captured[n] * head.conv.scale                                      # [B, C, s, s]
                y = head.from_rgb(pyramid[head.factor * x.shape[-1]])                  # [B, K, s, s]
                xm = torch.cat((x, torch.ones_like(x[:, :1])), 1).permute(0, 2, 3, 1).reshape(-1, x.shape[1] + 1)
                ym = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])
                # float32 products per batch (fast GEMM), accumulated in float64.
                acc = ((xm.T @ xm).double(), (xm.T @ ym).double(), (ym.double() ** 2).sum(), len(ym))
                stats[n] = acc if stats[n] is None else tuple(a + b for a, b in zip(stats[n], acc))
    finally:
        for h in hooks:
            h.remove()
        student.train(was_training)
    fitted = {}
    for n, head in heads:
        xtx, xty, yty, count = stats[n]
        dim = xtx.shape[0]
        reg = ridge * torch.trace(xtx) / dim
        sol = torch.linalg.solve(xtx + reg * torch.eye(dim, dtype=xtx.dtype), xty)    # [C+1, K]
        residual = yty - 2 * (sol * xty).sum() + (sol * (xtx @ sol)).sum()
        fitted[n] = float(residual / (count * xty.shape[1]))
        conv = head.conv
        conv.conv.weight.copy_(sol[:-1].T.reshape(conv.conv.weight.shape).float())
        conv.conv.bias.copy_(sol[-1].float())
        conv.modulation.weight.zero_()
        conv.modulation.bias.fill_(1.0)
    return fitted


def export_student(student: Generator) -> Generator:
    """The inference model: same weights without the intermediate (training-only) heads, eval mode, CPU."""
    config = GeneratorConfig(**{**student.config.to_dict(), "all_heads": False})
    out = Generator(config)
    state = {k: v.detach().cpu() for k, v in student.state_dict().items() if k in out.state_dict()}
    out.load_state_dict(state, strict=True)
    return out.eval()
