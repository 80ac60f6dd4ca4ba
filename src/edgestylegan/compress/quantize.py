"""Static int8 post-training quantization of MobileStyleGAN: calibration, per-site sensitivity, two engines.

What runs in int8
* Conv "sites": every `ModulatedConv2d` (the 3x3 `conv1`, the 1x1 frequency heads) and every `ModulatedDWConv2d`
  (depthwise 3x3 + pointwise 1x1; the tensor between them stays int8). A site's input (the style-modulated
  activation), its output and, for depthwise sites, the intermediate tensor are quantized per tensor (uint8,
  asymmetric, ranges from calibration); its weights per output channel (int8, symmetric). Biases: float (torch) /
  int32 (ONNX Runtime QDQ).
* Float islands: the style multiplies (`x * (A w + a)`), noise, leaky ReLU, the Haar IDWT and the mapping network's
  activations. The modulation linears and the mapping network run at batch 1 as 512-wide mat-vecs (0.08 % of the
  MACs), so int8 compute would not pay; their weights are stored as int8 (per output row, symmetric) and
  dequantized to float for compute ("int8 weights, float compute").
* Sites whose quantization costs too much fidelity are kept float (`select_float_sites`).

Calibration: `calibration_samples` latents from a fixed seed (truncation `truncation`) run through the float model;
for each quantized tensor the exact min/max and a random subsample of values are kept. `minmax` uses the exact
range; `mse` shrinks it to the clipping range that minimises the int8 round-trip error on the subsample.

Engines
* `torch`: eager PyTorch quantized modules (`torch.ao.nn.quantized`: `Quantize`, `Conv2d`, `DeQuantize`) on the
  `x86` (fbgemm/oneDNN; 7-bit activations as PyTorch's x86 default, safe on CPUs without VNNI) or `qnnpack` backend.
  Saved as safetensors (`edgestylegan.int8_generator.v1`: int8 weights, scales, activation quantization params in
  the metadata) and rebuilt on load; nothing is pickled.
* `onnxruntime`: the float model exported to ONNX, then ONNX Runtime's `quantize_static` (QDQ format, per-channel
  weights) with the calibrated ranges given as tensor overrides, and int8 weight-only DequantizeLinear for the
  linears. The same file runs on OpenVINO, which executes the QDQ convs in int8 too.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from ..io.atomic import atomic_path, write_safetensors
from ..imaging import psnr
from ..io.checkpoint import CheckpointError, generator_from_state, read_header
from ..models.mobilestylegan import Generator, GeneratorConfig, ModulatedConv2d, ModulatedDWConv2d, latents_from_seeds

TORCH_FORMAT = "edgestylegan.int8_generator.v1"
BACKENDS = ("x86", "qnnpack")
QMAX = {"x86": 127, "qnnpack": 255, "onnxruntime": 255}   # activation levels - 1 (x86: reduce_range)
_MSE_FACTORS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.16, 0.12, 0.09, 0.06, 0.04, 0.02)
_ORT_QUANTIZER = os.path.join("onnxruntime", "quantization", "")


class _QuantizerNotices(logging.Filter):
    """Drops the INFO/WARNING records ONNX Runtime's quantizer sends to the root logger (a pre-processing hint,
    shape inference, that does not apply to this graph); every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING or _ORT_QUANTIZER not in record.pathname


@contextlib.contextmanager
def _quiet():
    """torch.ao quantization and quantized-tensor creation emit deprecation warnings on every call; ONNX Runtime's
    quantizer logs notices. Python warnings and those notices are silenced inside the block only; the logging
    configuration is restored on exit and records from any other source still pass."""
    notices = _QuantizerNotices()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.root.addFilter(notices)
        try:
            yield
        finally:
            logging.root.removeFilter(notices)


#---------------------------------------------------------------------------- sites


def conv_sites(gen: Generator) -> dict[str, nn.Module]:
    """Site name -> its ModulatedConv2d / ModulatedDWConv2d, in forward order.

    Names are the synthesis-net path of the owning StyledConv / FrequencyHead: `conv1`, `blocks.3.conv2`,
    `blocks.6.to_img` (the `.conv` suffix dropped)."""
    sites = {}
    for name, module in gen.synthesis.named_modules():
        if isinstance(module, (ModulatedConv2d, ModulatedDWConv2d)):
            sites[name.removesuffix(".conv")] = module
    return sites


def _site_convs(module: nn.Module) -> list[nn.Conv2d]:
    if isinstance(module, ModulatedDWConv2d):
        return [module.depthwise, module.pointwise]
    return [module.conv]


def _points(module: nn.Module) -> tuple[str, ...]:
    return ("in", "mid", "out") if isinstance(module, ModulatedDWConv2d) else ("in", "out")


def site_macs(gen: Generator) -> dict[str, int]:
    from ..models.macs import analytic_macs

    layers = analytic_macs(gen.config)["layers"]
    out = {}
    for site, module in conv_sites(gen).items():
        prefix = f"synthesis.{site}.conv."
        out[site] = sum(v for k, v in layers.items() if k.startswith(prefix) and ".modulation" not in k)
    return out


#---------------------------------------------------------------------------- calibration


@dataclasses.dataclass
class _Observed:
    lo: float = math.inf
    hi: float = -math.inf
    samples: list = dataclasses.field(default_factory=list)

    def update(self, x: torch.Tensor, keep: int, generator: torch.Generator) -> None:
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        flat = x.detach().reshape(-1)
        if flat.numel() > keep:
            flat = flat[torch.randint(0, flat.numel(), (keep,), generator=generator)]
        self.samples.append(flat.float().clone())


def _affine(lo: float, hi: float, qmax: int) -> tuple[float, int]:
    """(scale, zero_point) of asymmetric unsigned quantization covering [lo, hi] (which always includes 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / qmax, 1e-8)
    zero_point = int(min(max(round(-lo / scale), 0), qmax))
    return scale, zero_point


def _fake_quant(x: torch.Tensor, lo: float, hi: float, qmax: int) -> torch.Tensor:
    scale, zp = _affine(lo, hi, qmax)
    return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, qmax)


def _choose_range(obs: _Observed, method: str, qmax: int) -> tuple[float, float]:
    if method == "minmax" or not obs.samples:
        return obs.lo, obs.hi
    x = torch.cat(obs.samples)
    best = None
    for f in _MSE_FACTORS:
        lo, hi = obs.lo * f, obs.hi * f
        err = float((_fake_quant(x, lo, hi, qmax) - x).square().mean())
        if best is None or err < best[0]:
            best = (err, lo, hi)
    return best[1], best[2]


@dataclasses.dataclass
class Calibration:
    """Observed activation statistics per site and point; `ranges(method, qmax)` turns them into clip ranges."""
    observed: dict[str, dict[str, _Observed]]
    num_samples: int
    seed: int
    truncation: float

    def ranges(self, method: str, qmax: int) -> dict[str, dict[str, tuple[float, float]]]:
        return {site: {pt: _choose_range(obs, method, qmax) for pt, obs in pts.items()}
                for site, pts in self.observed.items()}

    def engine_ranges(self, method: str, backend: str) -> dict[str, dict]:
        """Clip ranges for each engine: "onnxruntime" (uint8, 255 levels) and "torch" (QMAX[backend] levels)."""
        return {"onnxruntime": self.ranges(method, QMAX["onnxruntime"]), "torch": self.ranges(method, QMAX[backend])}

    def record(self) -> dict:
        return {"num_samples": self.num_samples, "seed": self.seed, "truncation": self.truncation,
                "observed_minmax": {f"{s}.{p}": [o.lo, o.hi] for s, pts in self.observed.items()
                                    for p, o in pts.items()}}


@torch.no_grad()
def calibrate(gen: Generator, num_samples: int, seed: int, truncation: float = 1.0, batch_size: int = 4,
              keep_per_call: int = 16384, progress: bool = True) -> Calibration:
    """Run `num_samples` latents (torch.Generator seeded with `seed`) through the float model; observe every site's
    quantized tensors (min/max over all values, plus `keep_per_call` random values per call for range search)."""
    sites = conv_sites(gen)
    observed = {site: {pt: _Observed() for pt in _points(m)} for site, m in sites.items()}
    sampler = torch.Generator().manual_seed(seed + 1)
    hooks = []
    for site, module in sites.items():
        convs, obs = _site_convs(module), observed[site]
        hooks.append(convs[0].register_forward_pre_hook(
            lambda m, args, o=obs["in"]: o.update(args[0], keep_per_call, sampler)))
        if len(convs) == 2:
            hooks.append(convs[0].register_forward_hook(
                lambda m, args, y, o=obs["mid"]: o.update(y, keep_per_call, sampler)))
        hooks.append(convs[-1].register_forward_hook(
            lambda m, args, y, o=obs["out"]: o.update(y, keep_per_call, sampler)))
    z = torch.randn(num_samples, gen.config.style_dim, generator=torch.Generator().manual_seed(seed))
    try:
        for start in tqdm(range(0, num_samples, batch_size), desc="calibrate", disable=not progress, leave=False):
            gen(z[start:start + batch_size], truncation=truncation)
    finally:
        for h in hooks:
            h.remove()
    return Calibration(observed, num_samples, seed, truncation)


#---------------------------------------------------------------------------- weights


def quantize_weight_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel (dim 0): -> (int8 values in [-127, 127], float32 scales)."""
    amax = w.detach().float().reshape(w.shape[0], -1).abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(w.detach().float() / scale.view(-1, *([1] * (w.dim() - 1)))).clamp(-127, 127).to(torch.int8)
    return q, scale.float()


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.view(-1, *([1] * (q.dim() - 1)))


def storage_plan(gen: Generator, int8_sites, float_weights: str = "int8") -> dict[str, str]:
    """How each state-dict tensor is stored in an int8 model file: "int8" (per-channel symmetric), "fp16" or absent
    (as is, fp32).

    int8: the conv weights of int8 sites and the modulation linear weights (int8 storage, float compute; their
    int8 round trip costs little: ~45-58 dB alone). fp16: the mapping network weights (int8 would cost 28-35 dB
    PSNR on its own: every style depends on them) and the fixed noise maps. The conv weights of sites kept float
    are stored as `float_weights` (int8: weight-only int8, float activations; fp16). Biases, the constant input,
    noise strengths and w_avg stay fp32 (0.2 % of the bytes).
    """
    sites = conv_sites(gen)
    plan = {}
    for name, module in gen.named_modules():
        if isinstance(module, nn.Linear):
            plan[f"{name}.weight"] = "int8" if name.startswith("synthesis.") else "fp16"
    for site, module in sites.items():
        for conv in (["depthwise", "pointwise"] if isinstance(module, ModulatedDWConv2d) else ["conv"]):
            plan[f"synthesis.{site}.conv.{conv}.weight"] = "int8" if site in int8_sites else float_weights
    for name, _ in gen.named_buffers():
        if name.endswith("noise.noise_map"):
            plan[name] = "fp16"
    return plan


def _round_trip(value: torch.Tensor, how: str) -> torch.Tensor:
    if how == "int8":
        return dequantize_weight(*quantize_weight_per_channel(value))
    if how == "fp16":
        return value.detach().half().float()
    return value


def with_storage_rounding(gen: Generator, int8_sites, float_weights: str = "int8") -> Generator:
    """Copy of `gen` with every tensor replaced by its stored round trip (int8-site convs too: their float weights
    become the dequantized int8 weights)."""
    out = copy.deepcopy(gen)
    plan = storage_plan(out, int8_sites, float_weights)
    with torch.no_grad():
        for name, tensor in out.state_dict().items():   # state_dict tensors share storage with the module
            if name in plan:
                tensor.copy_(_round_trip(tensor, plan[name]))
    return out.eval()


#---------------------------------------------------------------------------- fidelity and the float-site search


def finite_or_none(x: float) -> float | None:
    """A PSNR for JSON: None (null) when it is not finite (NaN images); JSON has no inf or NaN."""
    return float(x) if math.isfinite(x) else None


class FakeQuantSimulator:
    """The float generator with int8 rounding simulated at chosen sites (fake quantization) for fast what-ifs.

    Every other tensor is rounded as it is stored (`storage_plan`). `psnr(int8_sites)` = mean PSNR vs the fp32 model
    over the fidelity latents.
    """

    def __init__(self, gen: Generator, ranges: dict, qmax: int, z: torch.Tensor, truncation: float,
                 reference: torch.Tensor | None = None, float_weights: str = "int8"):
        self.gen = with_storage_rounding(gen, (), float_weights).eval()   # every conv as a float site stores it
        self.sites = conv_sites(self.gen)
        self.ranges, self.qmax, self.z, self.truncation = ranges, qmax, z, truncation
        self.qweights = {}
        with torch.no_grad():
            for site, module in conv_sites(gen).items():
                self.qweights[site] = [dequantize_weight(*quantize_weight_per_channel(c.weight))
                                       for c in _site_convs(module)]
            self.reference = reference if reference is not None else gen(z, truncation=truncation)

    @torch.no_grad()
    def images(self, int8_sites, count: int | None = None) -> torch.Tensor:
        hooks, saved = [], []
        try:
            for site in int8_sites:
                module, r = self.sites[site], self.ranges[site]
                convs = _site_convs(module)
                for conv, qw in zip(convs, self.qweights[site]):
                    saved.append((conv, conv.weight.data))
                    conv.weight.data = qw
                hooks.append(convs[0].register_forward_pre_hook(
                    lambda m, args, r=r["in"]: (_fake_quant(args[0], *r, self.qmax),)))
                if len(convs) == 2:
                    hooks.append(convs[0].register_forward_hook(
                        lambda m, args, y, r=r["mid"]: _fake_quant(y, *r, self.qmax)))
                hooks.append(convs[-1].register_forward_hook(
                    lambda m, args, y, r=r["out"]: _fake_quant(y, *r, self.qmax)))
            z = self.z[:count] if count else self.z
            return torch.cat([self.gen(z[i:i + 1], truncation=self.truncation) for i in range(len(z))])
        finally:
            for h in hooks:
                h.remove()
            for conv, data in saved:
                conv.weight.data = data

    def psnr(self, int8_sites, count: int | None = None) -> float:
        """Mean PSNR vs fp32 over the fidelity latents (the first `count` of them if given)."""
        images = self.images(int8_sites, count)
        return float(psnr(images, self.reference[:len(images)]).mean())


def select_float_sites(sim: FakeQuantSimulator, min_psnr: float, keep_float: list[str], macs: dict[str, int],
                       progress: bool = True, sensitivity_latents: int = 2) -> dict:
    """Choose the sites to keep float so that the simulated PSNR reaches `min_psnr` with as many MACs in int8 as
    possible.

    Sensitivity of a site = the error (MSE vs fp32) when only it is int8; sites are ranked by sensitivity per MAC
    (cheap-but-harmful first) and the smallest prefix to keep float is found by bisection (PSNR rises with the
    prefix length in practice; every evaluated point is returned as the trade-off curve). The single-site
    sensitivities, which only rank the sites, use the first `sensitivity_latents` fidelity latents; every PSNR
    that decides or is reported uses all of them.
    """
    names = list(sim.sites)
    candidates = [s for s in names if s not in keep_float]
    all_int8 = sim.psnr(candidates)
    result = {"all_int8_psnr": all_int8, "sensitivity_psnr": {}, "order": [], "curve": {0: all_int8},
              "float_sites": list(keep_float), "psnr": all_int8, "target_met": all_int8 >= min_psnr}
    if min_psnr <= 0 or all_int8 >= min_psnr or not candidates:
        return result
    sens = {}
    for s in tqdm(candidates, desc="sensitivity", disable=not progress, leave=False):
        sens[s] = sim.psnr([s], sensitivity_latents)
    mse = {s: 4.0 / 10 ** (p / 10) for s, p in sens.items()}
    order = sorted(candidates, key=lambda s: mse[s] / max(macs.get(s, 1), 1), reverse=True)
    result["sensitivity_psnr"], result["order"] = sens, order
    curve = result["curve"]
    lo, hi = 0, len(order)          # invariant: prefix lo fails, prefix hi passes
    curve[len(order)] = sim.psnr([])   # every site float: what the weight storage alone costs
    if curve[len(order)] < min_psnr:  # unreachable: even all-float storage rounding is below the target
        result.update(float_sites=list(keep_float) + order, psnr=curve[len(order)], target_met=False)
        return result
    while hi - lo > 1:
        mid = (lo + hi) // 2
        curve[mid] = sim.psnr(order[mid:])
        if curve[mid] >= min_psnr:
            hi = mid
        else:
            lo = mid
    result.update(float_sites=list(keep_float) + order[:hi], psnr=curve[hi], target_met=True)
    return result


#---------------------------------------------------------------------------- torch engine


def _set_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown quantized backend {backend!r}; choose one of {BACKENDS}")
    if backend not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"PyTorch here does not support the {backend} quantized engine "
                           f"(supported: {torch.backends.quantized.supported_engines})")
    if torch.backends.quantized.engine != backend:
        torch.backends.quantized.engine = backend


def _qconv(conv: nn.Conv2d, q: torch.Tensor, scale: torch.Tensor, out_scale: float, out_zp: int) -> nn.Module:
    import torch.ao.nn.quantized as nnq

    with _quiet():
        qconv = nnq.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                           padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                           bias=conv.bias is not None)
        qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros(len(scale),
                                                           dtype=torch.long), 0)
        qconv.set_weight_bias(qweight, None if conv.bias is None else conv.bias.detach().float().clone())
    qconv.scale, qconv.zero_point = float(out_scale), int(out_zp)
    return qconv


def _swap_site(module: nn.Module, qparams: dict, weights: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Replace the convs of one site by quantized modules (in place). qparams: point -> (scale, zero_point)."""
    import torch.ao.nn.quantized as nnq

    with _quiet():
        quant = nnq.Quantize(qparams["in"][0], qparams["in"][1], torch.quint8)
        dequant = nnq.DeQuantize()
    if isinstance(module, ModulatedDWConv2d):
        (qdw, sdw), (qpw, spw) = weights
        module.depthwise = nn.Sequential(quant, _qconv(module.depthwise, qdw, sdw, *qparams["mid"]))
        module.pointwise = nn.Sequential(_qconv(module.pointwise, qpw, spw, *qparams["out"]), dequant)
    else:
        (q, s), = weights
        module.conv = nn.Sequential(quant, _qconv(module.conv, q, s, *qparams["out"]), dequant)


def _qparams(ranges: dict, qmax: int) -> dict:
    return {site: {pt: _affine(lo, hi, qmax) for pt, (lo, hi) in pts.items()} for site, pts in ranges.items()}


def _int8_state(gen: Generator, int8_sites: list[str], float_weights: str) -> dict[str, torch.Tensor]:
    """Tensors of an int8 model file: `name::int8` + `name::scale` or `name::fp16` per `storage_plan`, else as is."""
    plan = storage_plan(gen, int8_sites, float_weights)
    tensors = {}
    for name, value in gen.state_dict().items():
        value = value.detach().contiguous().cpu()
        how = plan.get(name)
        if how == "int8":
            tensors[f"{name}::int8"], tensors[f"{name}::scale"] = quantize_weight_per_channel(value)
        elif how == "fp16":
            tensors[f"{name}::fp16"] = value.half()
        else:
            tensors[name] = value
    return tensors


def _float_skeleton(config: GeneratorConfig, tensors: dict, path) -> Generator:
    """A float Generator holding the stored round trip of every tensor."""
    state = {}
    for key, value in tensors.items():
        if key.endswith("::int8"):
            name = key.removesuffix("::int8")
            state[name] = dequantize_weight(value, tensors[f"{name}::scale"])
        elif key.endswith("::fp16"):
            state[key.removesuffix("::fp16")] = value.float()
        elif "::" not in key:
            state[key] = value
    return generator_from_state(config, state, path)


def _convert(gen: Generator, tensors: dict, qparams: dict, backend: str) -> Generator:
    _set_backend(backend)
    sites = conv_sites(gen)
    for site, params in qparams.items():
        module = sites[site]
        conv_names = ["depthwise", "pointwise"] if isinstance(module, ModulatedDWConv2d) else ["conv"]
        names = [f"synthesis.{site}.conv.{c}.weight" for c in conv_names]
        weights = [(tensors[f"{n}::int8"], tensors[f"{n}::scale"]) for n in names]
        _swap_site(module, params, weights)
    gen.register_forward_pre_hook(lambda m, args: _set_backend(backend))
    gen.quantization = {"engine": "torch", "backend": backend, "int8_sites": sorted(qparams)}
    return gen.eval()


def build_torch_int8(gen: Generator, ranges: dict, int8_sites: list[str], backend: str,
                     float_weights: str = "int8") -> Generator:
    """An int8 copy of `gen` (torch engine). `ranges`: calibrated clip ranges for QMAX[backend]."""
    tensors = _int8_state(gen, int8_sites, float_weights)
    skeleton = _float_skeleton(gen.config, tensors, "<memory>")
    qmax = QMAX[backend]
    return _convert(skeleton, tensors, {s: _qparams({s: ranges[s]}, qmax)[s] for s in int8_sites}, backend)


def save_torch_int8(gen: Generator, ranges: dict, int8_sites: list[str], backend: str, path: str | Path,
                    info: dict | None = None, float_weights: str = "int8") -> Path:
    """Write the torch-engine int8 model for float `gen` (safetensors, no pickle)."""
    tensors = _int8_state(gen, int8_sites, float_weights)
    qparams = {s: _qparams({s: ranges[s]}, QMAX[backend])[s] for s in int8_sites}
    meta = {"format": TORCH_FORMAT, "config": json.dumps(gen.config.to_dict()), "backend": backend,
            "qparams": json.dumps(qparams), "info": json.dumps(info or {})}
    write_safetensors(path, tensors, meta)
    return Path(path)


def load_torch_int8(path: str | Path) -> Generator:
    """`pipeline.loaders` loader for format edgestylegan.int8_generator.v1: a Generator with int8 conv sites."""
    path = Path(path)
    config, meta = read_header(path, TORCH_FORMAT, "int8 generator")
    try:
        qparams = {s: {p: (float(v[0]), int(v[1])) for p, v in pts.items()}
                   for s, pts in json.loads(meta["qparams"]).items()}
        backend = meta["backend"]
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad int8 model metadata: {e}") from e
    tensors = load_file(str(path))
    gen = _float_skeleton(config, tensors, path)
    unknown = set(qparams) - set(conv_sites(gen))
    if unknown:
        raise CheckpointError(f"{path}: quantized sites {sorted(unknown)} do not exist in this architecture")
    return _convert(gen, tensors, qparams, backend)


#---------------------------------------------------------------------------- ONNX Runtime engine


def _onnx_site_tensors(model, gen: Generator) -> dict[str, dict]:
    """Site -> {"nodes": [Conv node names], "in"/"mid"/"out": tensor names}, found via weight initializer names."""
    by_weight = {n.input[1]: n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1}
    out = {}
    for site, module in conv_sites(gen).items():
        names = ["depthwise", "pointwise"] if isinstance(module, ModulatedDWConv2d) else ["conv"]
        nodes = []
        for c in names:
            key = f"gen.synthesis.{site}.conv.{c}.weight"
            if key not in by_weight:
                raise RuntimeError(f"exported ONNX graph has no Conv reading {key}")
            nodes.append(by_weight[key])
        entry = {"nodes": [n.name for n in nodes], "in": nodes[0].input[0], "out": nodes[-1].output[0]}
        if len(nodes) == 2:
            if nodes[1].input[0] != nodes[0].output[0]:
                raise RuntimeError(f"{site}: depthwise output does not feed the pointwise conv directly")
            entry["mid"] = nodes[0].output[0]
        out[site] = entry
    return out


def _compact_storage(model, plan: dict[str, str]) -> dict[str, int]:
    """Store fp32 initializers named `gen.<state-dict name>` as `plan` says (in place): int8 (per row, symmetric)
    behind a DequantizeLinear, or fp16 behind a Cast, each producing the original name so consumers are unchanged.
    Runtimes fold the Cast of a constant at load; the DequantizeLinear of a weight that feeds a float Gemm runs per
    call (3.5 M values, about a millisecond)."""
    import onnx
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    front, counts = [], {"int8": 0, "fp16": 0}
    for key, how in plan.items():
        name = f"gen.{key}"
        if name not in inits or inits[name].data_type != onnx.TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(inits[name])
        model.graph.initializer.remove(inits[name])
        if how == "int8":
            q, scale = quantize_weight_per_channel(torch.from_numpy(array.copy()))
            model.graph.initializer.extend([
                numpy_helper.from_array(q.numpy(), f"{name}::int8"),
                numpy_helper.from_array(scale.numpy().astype(np.float32), f"{name}::scale"),
                numpy_helper.from_array(np.zeros(len(scale), dtype=np.int8), f"{name}::zero_point")])
            front.append(helper.make_node("DequantizeLinear", [f"{name}::int8", f"{name}::scale",
                                                               f"{name}::zero_point"], [name], axis=0,
                                          name=f"{name}::dequantize"))
        else:
            model.graph.initializer.append(numpy_helper.from_array(array.astype(np.float16), f"{name}::fp16"))
            front.append(helper.make_node("Cast", [f"{name}::fp16"], [name], to=onnx.TensorProto.FLOAT,
                                          name=f"{name}::cast"))
        counts[how] += 1
    nodes = front + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return counts


def build_onnx_int8(float_onnx: str | Path, out_path: str | Path, gen: Generator, ranges: dict,
                    int8_sites: list[str], calibration_z: np.ndarray, info: dict | None = None,
                    float_weights: str = "int8") -> dict:
    """QDQ int8 ONNX model of the exported float `gen`: the int8 sites' Conv nodes quantized by ONNX Runtime with
    our calibrated ranges (uint8 activations, per-channel int8 weights), linears int8 weight-only. Returns a record."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from ..runtimes.onnx import set_metadata

    model = onnx.load(str(float_onnx))
    tensors = _onnx_site_tensors(model, gen)
    overrides, nodes = {}, []
    for site in int8_sites:
        entry = tensors[site]
        nodes += entry["nodes"]
        for pt, (lo, hi) in ranges[site].items():
            overrides[entry[pt]] = [{"rmin": np.float32(min(lo, 0.0)), "rmax": np.float32(max(hi, 0.0))}]

    class _Reader(CalibrationDataReader):   # overrides fix every range; one latent only satisfies the API
        def __init__(self):
            self.items = iter([{"z": calibration_z[:1].astype(np.float32), "truncation": np.asarray(1.0, np.float32)}])

        def get_next(self):
            return next(self.items, None)

    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".onnx") as tmp:
        if nodes:
            with _quiet():
                quantize_static(str(float_onnx), str(tmp), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=["Conv"], nodes_to_quantize=nodes,
                                extra_options={"TensorQuantOverrides": overrides, "ActivationSymmetric": False,
                                               "WeightSymmetric": True})
            model = onnx.load(str(tmp))
        counts = _compact_storage(model, storage_plan(gen, int8_sites, float_weights))
        set_metadata(model, gen.config, "int8-qdq", info)
        onnx.save(model, str(tmp))
    return {"int8_conv_nodes": len(nodes), "int8_weight_only_tensors": counts["int8"],
            "fp16_tensors": counts["fp16"]}


#---------------------------------------------------------------------------- records


def site_table(gen: Generator, float_sites: list[str], search: dict, macs: dict[str, int]) -> dict[str, dict]:
    """Per site: what runs in int8, MACs, and the single-site sensitivity PSNR (when the search ran)."""
    rows = {}
    for site, module in conv_sites(gen).items():
        kind = "depthwise3x3+pointwise1x1" if isinstance(module, ModulatedDWConv2d) else (
            f"conv{module.conv.kernel_size[0]}x{module.conv.kernel_size[1]}")
        rows[site] = {"kind": kind, "int8": site not in float_sites, "macs": macs.get(site, 0),
                      "sensitivity_psnr": search.get("sensitivity_psnr", {}).get(site, float("nan"))}
    return rows


def latents(seeds: list[int], style_dim: int) -> torch.Tensor:
    return latents_from_seeds(seeds, style_dim)


def images_of(model: Callable, z: torch.Tensor, truncation: float) -> torch.Tensor:
    """Images of `model` one latent at a time (bounded memory at 1024^2)."""
    with torch.inference_mode():
        return torch.cat([model(z[i:i + 1], truncation=truncation) for i in range(len(z))])


def module_precisions(gen: Generator, int8_sites, float_weights: str = "int8") -> dict[str, str]:
    """Every conv / linear module of the generator -> what the int8 files do with it."""
    plan = storage_plan(gen, int8_sites, float_weights)
    site_convs = {f"synthesis.{s}.conv.{c}" for s in int8_sites for c in ("conv", "depthwise", "pointwise")}
    out = {}
    for name, module in gen.named_modules():
        if isinstance(module, nn.Conv2d) and name in site_convs:
            out[name] = "int8 compute (static: int8 weights, uint8 activations)"
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            out[name] = f"fp32 compute, {plan[f'{name}.weight']} weights"
    return out


def sites_csv(gen: Generator, float_sites: list[str], search: dict, macs: dict[str, int],
              float_weights: str = "int8") -> str:
    """reports/quantize*/sites.csv: per conv site its kind, precision, MACs, single-site int8 PSNR and its rank in
    the float-site order (1 = kept float first)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["site", "kind", "precision", "macs", "single_site_int8_psnr_db", "float_rank"])
    for site, row in site_table(gen, float_sites, search, macs).items():
        rank = search["order"].index(site) + 1 if site in search["order"] else ""
        writer.writerow([site, row["kind"], "int8" if row["int8"] else f"float ({float_weights} weights)", row["macs"],
                         "" if math.isnan(row["sensitivity_psnr"]) else f"{row['sensitivity_psnr']:.2f}", rank])
    return buf.getvalue()


def quantization_record(gen: Generator, cal: Calibration, calibration: str, backend: str, ranges: dict,
                        search: dict, int8_sites: list[str], float_weights: str, onnx_record: dict) -> dict:
    """reports/quantize*/record.json: the calibration, the ranges each engine uses, the search and the precision of
    every module."""
    return {"calibration": cal.record(), "calibration_method": calibration, "backend": backend,
            "ranges": {e: {f"{s}.{pt}": list(v) for s, pts in r.items() for pt, v in pts.items()}
                       for e, r in ranges.items()},
            "search": {"order": search["order"], "sensitivity_psnr_db": search["sensitivity_psnr"],
                       "curve_simulated_psnr_db": {str(k): finite_or_none(v) for k, v in search["curve"].items()},
                       "float_sites": search["float_sites"]},
            "modules": module_precisions(gen, int8_sites, float_weights), "onnx": onnx_record}
