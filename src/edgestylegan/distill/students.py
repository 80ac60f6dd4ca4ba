"""Build MobileStyleGAN students for distillation, initialise their new heads, export the inference model.

A student always shares the teacher's mapping network, truncation centre and fixed noise maps (student and teacher
see the same w and the same noise). `init = teacher` also copies the synthesis trunk of a MobileStyleGAN teacher
(const, conv1, blocks 0..n-1 with their noise strengths; a head only where the teacher has one at that block).
Heads the pretrained export lacks are new: random, or fitted in closed form (`fit_heads_lstsq`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from ..models.mobilestylegan import FrequencyHead, Generator, GeneratorConfig
from ..models.wavelets import dwt_haar
from .losses import image_pyramid
from .teachers import teacher_noise_by_layer


def build_student(config: GeneratorConfig, teacher: nn.Module, init: str, seed: int = 0) -> tuple[Generator, set[str]]:
    """Returns the student (train mode) and the names of its parameters copied from the teacher's synthesis net.

    With `init = teacher` the student's widths must be the teacher's, except that the last block may be narrower:
    that block is then initialised from the teacher's channels that carry the most signal (`select_channels`) and
    counts as new (it is retrained; its parameters are not in the returned set).
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
        last = config.num_blocks - 1
        teacher_width = teacher.config.channels[last + 1]
        narrowed = last >= 0 and config.used_channels[-1] < teacher_width
        source = teacher.synthesis.state_dict()
        target = student.synthesis.state_dict()
        copied = {}
        for key, value in target.items():
            if key not in source or (narrowed and key.startswith(f"blocks.{last}.")):
                continue  # Heads the teacher does not have; the narrowed block (below).
            if source[key].shape != value.shape:
                raise UserError(f"student.init = teacher: synthesis.{key} is {tuple(value.shape)} in the student but "
                                f"{tuple(source[key].shape)} in the teacher; student.channels must start with the "
                                f"teacher's {list(teacher.config.channels[:config.num_blocks + 1])} (the last entry "
                                f"may be smaller)")
            copied[key] = source[key]
        student.synthesis.load_state_dict(copied, strict=False)
        param_names = {n for n, _ in student.synthesis.named_parameters()}
        pretrained = {f"synthesis.{k}" for k in copied if k in param_names}
        if narrowed:
            derived = select_channels(student, teacher, last)
    elif init != "scratch":
        raise ValueError(f"unknown student.init {init!r}")
    tame_new_modulations(student, pretrained | derived)
    share_noise(student, teacher)
    return student.train(), pretrained


@torch.no_grad()
def select_channels(student: Generator, teacher: Generator, index: int, num_latents: int = 16) -> set[str]:
    """Initialise the student's narrower block `index` from the teacher's block (structured channel selection).

    The block's two styled convs keep the teacher's input side; their outputs keep the teacher channels with the
    largest importance: RMS activation over `num_latents` latents, times (for conv1's outputs) the norm of the
    weights of conv2 that read them. Returns the names of the parameters so initialised.
    """
    net = teacher.synthesis
    w = teacher.style(torch.randn(num_latents, teacher.style_dim, generator=torch.Generator().manual_seed(0)))
    x = net.conv1(net.const.expand(num_latents, -1, -1, -1), w, "fixed")
    for block in net.blocks[:index]:
        x, _ = block(x, w, "fixed")
    tb = net.blocks[index]
    h1 = tb.conv1(tb.up(x, w), w, "fixed")
    h2 = tb.conv2(h1, w, "fixed")
    rms = lambda h: h.square().mean(dim=(0, 2, 3)).sqrt()  # noqa: E731
    conv2 = tb.conv2.conv
    reads = conv2.depthwise.weight.flatten(1).norm(dim=1) * conv2.pointwise.weight.flatten(1).norm(dim=0)
    width = student.config.used_channels[index + 1]
    keep1 = torch.argsort(rms(h1) * reads, descending=True)[:width].sort().values
    keep2 = torch.argsort(rms(h2), descending=True)[:width].sort().values

    t = {k: v for k, v in tb.state_dict().items()}
    picked = {k: v for k, v in t.items() if k.startswith(("up.", "conv1.conv.modulation.", "conv1.conv.depthwise.",
                                                          "conv1.noise.", "conv2.noise."))}
    picked.update({
        "conv1.conv.pointwise.weight": t["conv1.conv.pointwise.weight"][keep1],
        "conv1.conv.pointwise.bias": t["conv1.conv.pointwise.bias"][keep1],
        "conv2.conv.modulation.weight": t["conv2.conv.modulation.weight"][keep1],
        "conv2.conv.modulation.bias": t["conv2.conv.modulation.bias"][keep1],
        "conv2.conv.depthwise.weight": t["conv2.conv.depthwise.weight"][keep1],
        "conv2.conv.pointwise.weight": t["conv2.conv.pointwise.weight"][keep2][:, keep1],
        "conv2.conv.pointwise.bias": t["conv2.conv.pointwise.bias"][keep2],
    })
    sb = student.synthesis.blocks[index]
    sb.load_state_dict(picked, strict=False)
    params = {n for n, _ in sb.named_parameters()}
    return {f"synthesis.blocks.{index}.{k}" for k in picked if k in params}


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


def head_modules(student: Generator) -> list[tuple[str, FrequencyHead]]:
    return [(f"synthesis.{n}", m) for n, m in student.synthesis.named_modules() if isinstance(m, FrequencyHead)]


@torch.no_grad()
def fit_heads_lstsq(student: Generator, w: torch.Tensor, targets: torch.Tensor, names: set[str] | None = None,
                    batch_size: int = 4, ridge: float = 1e-4,
                    inputs: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Closed-form init of frequency heads: ridge regression from head input to the teacher's Haar pyramid.

    With the modulation set to a constant (A = 0, a = 1) a head is the linear map freq = W (scale * x) + b, so the
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
            pyramid = image_pyramid(tb.float(), [2 * captured[n].shape[-1] for n, _ in heads])
            for n, head in heads:
                x = captured[n] * head.conv.scale                                      # [B, C, s, s]
                y = dwt_haar(pyramid[2 * x.shape[-1]])                                  # [B, 12, s, s]
                xm = torch.cat((x, torch.ones_like(x[:, :1])), 1).permute(0, 2, 3, 1).reshape(-1, x.shape[1] + 1)
                ym = y.permute(0, 2, 3, 1).reshape(-1, 12)
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
        sol = torch.linalg.solve(xtx + reg * torch.eye(dim, dtype=xtx.dtype), xty)    # [C+1, 12]
        residual = yty - 2 * (sol * xty).sum() + (sol * (xtx @ sol)).sum()
        fitted[n] = float(residual / (count * 12))
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
