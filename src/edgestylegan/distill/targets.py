"""Teacher targets for distillation: a cached pool of teacher images (CPU default) or fresh ones every step (GPU).

On two CPU cores a 1024-px teacher image costs ~0.3 s (OpenVINO) to ~0.6 s (PyTorch), far more than a 256-px student
step, so the default renders a fixed pool once (a DVC-tracked stage output) and trains on it. The pool stores the
latents z and the teacher images already box-downsampled to the student resolution (the largest pyramid level the
losses need) in float16; a held-out validation split (its own seed) is rendered the same way.

Pool rendering is resumable: every chunk goes to `<cache_dir>/<fingerprint>/chunk-NNNN.safetensors` and an
interrupted run picks up after the last finished chunk.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from ..errors import UserError
from ..io.atomic import write_safetensors
from ..models.mobilestylegan import Generator
from ..runtimes.parity import decide, max_abs_difference, unchecked
from .teachers import Teacher

POOL_FORMAT = "edgestylegan.distill_pool.v2"   # v2: meta["parity"]


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    train_size: int           # Training latents.
    train_seed: int           # torch.Generator seed of the training z.
    val_size: int             # Held-out latents (disjoint seed).
    val_seed: int
    truncation: float         # psi applied to w before the teacher renders.
    resolution: int           # Stored image size (the student's).
    teacher_sha256: str       # Teacher file identity.

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class Pool:
    train_z: torch.Tensor     # [N, style_dim]
    train_images: torch.Tensor  # [N, 3, R, R] float16 in ~[-1, 1]
    val_z: torch.Tensor
    val_images: torch.Tensor
    meta: dict


def latents(n: int, seed: int, style_dim: int) -> torch.Tensor:
    return torch.randn(n, style_dim, generator=torch.Generator().manual_seed(seed))


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Area (box) downsampling, as imaging.resize does for the evaluation."""
    return images if images.shape[-1] == size else F.interpolate(images, size=(size, size), mode="area")


#----------------------------------------------------------------------------


PARITY_TOLERANCE = 1e-3
"""Max |OpenVINO - PyTorch| of the teacher renderer on its probe image, at the student resolution (box-downsampled
from 1024 px, which averages the IR's per-pixel f32 differences down)."""


class TeacherRenderer:
    """w -> teacher image at `resolution`. runtime torch (any device) or openvino (the random-face IR, f32).

    `auto` picks OpenVINO for a 1024-px MobileStyleGAN teacher exported from the random-face IR on CPU. OpenVINO
    (auto or asked for) is checked once, on `probe_w`, against PyTorch by the one parity policy
    (`runtimes.parity.decide`): auto falls back to PyTorch on a mismatch, an explicit `openvino` fails. `parity` is
    the resulting record (the pool's metadata and the distill metrics keep it).
    """

    def __init__(self, teacher: Teacher, resolution: int, runtime: str, device: str = "cpu",
                 probe_w: torch.Tensor | None = None, parity_tol: float = PARITY_TOLERANCE):
        self.teacher = teacher
        self.resolution = resolution
        self.device = torch.device(device)
        self.model = teacher.model.to(self.device)
        self._ov = None
        wants_ov = runtime == "openvino" or (
            runtime == "auto" and self.device.type == "cpu" and isinstance(teacher.model, Generator)
            and teacher.model.resolution == 1024 and str(teacher.info.get("source", "")).startswith("random-face"))
        if not wants_ov:
            self.parity = unchecked("teacher renderer", runtime, "torch")
        else:
            if not isinstance(teacher.model, Generator) or teacher.model.resolution != 1024:
                raise UserError("distill.teacher_runtime = openvino only runs the random-face MobileStyleGAN IR "
                                "(a 1024-px MobileStyleGAN teacher)")
            if probe_w is None:
                raise ValueError("an OpenVINO teacher renderer needs probe_w for its parity check")
            from ..runtimes.openvino_ir import OpenVINOGenerator

            self._ov = OpenVINOGenerator(precision="f32")
            probe = probe_w[:1]
            self.parity = decide("teacher renderer", runtime, "openvino", "torch",
                                 max_abs_difference(self._openvino(probe), self._torch(probe).cpu()), parity_tol,
                                 knob="distill.teacher_runtime")
            if self.parity.runtime != "openvino":
                self._ov = None
        self.runtime = self.parity.runtime

    @torch.no_grad()
    def _torch(self, w: torch.Tensor) -> torch.Tensor:
        img = self.model.synthesis(w.to(self.device), noise_mode="fixed")
        return downsample(img.float(), self.resolution)

    def _openvino(self, w: torch.Tensor) -> torch.Tensor:
        return downsample(torch.from_numpy(self._ov.synthesize(w.cpu().numpy())), self.resolution)

    @torch.no_grad()
    def render(self, w: torch.Tensor) -> torch.Tensor:
        return self._torch(w) if self._ov is None else self._openvino(w)


def _chunk_path(folder: Path, index: int) -> Path:
    return folder / f"chunk-{index:04d}.safetensors"


def build_pool(teacher: Teacher, spec: PoolSpec, dest: str | Path, cache_dir: str | Path, runtime: str,
               device: str = "cpu", chunk: int = 8, progress: bool = True) -> Pool:
    """Render the pool (resuming finished chunks from cache_dir) and write it atomically to dest.

    The renderer's parity probe is the first latent, as the first chunk computes its w."""
    model = teacher.model
    z_all = torch.cat((latents(spec.train_size, spec.train_seed, model.style_dim),
                       latents(spec.val_size, spec.val_seed, model.style_dim)))
    device = torch.device(device)
    with torch.no_grad():
        probe_w = model.to(device).style(z_all[:chunk].to(device), spec.truncation).cpu()[:1]
    renderer = TeacherRenderer(teacher, spec.resolution, runtime, device, probe_w)
    folder = Path(cache_dir) / spec.fingerprint()
    folder.mkdir(parents=True, exist_ok=True)
    num_chunks = math.ceil(len(z_all) / chunk)
    done = [i for i in range(num_chunks) if _chunk_path(folder, i).is_file()]
    images = []
    with tqdm(total=len(z_all), desc=f"teacher pool ({renderer.runtime})", unit="img", disable=not progress,
              initial=min(len(done) * chunk, len(z_all))) as bar:
        for i in range(num_chunks):
            path = _chunk_path(folder, i)
            if path.is_file():
                images.append(load_file(str(path))["images"])
                continue
            z = z_all[i * chunk:(i + 1) * chunk]
            with torch.no_grad():
                w = model.style(z.to(renderer.device), spec.truncation).cpu()
            step = 1 if renderer.runtime == "openvino" else 2  # Batch 2 bounds the 1024-px activations on CPU.
            rendered = torch.cat([renderer.render(w[j:j + step]).cpu() for j in range(0, len(w), step)])
            write_safetensors(path, {"images": rendered.half()})  # Atomic: a kill never leaves half a chunk.
            images.append(rendered.half())
            bar.update(len(z))
    images = torch.cat(images)
    n = spec.train_size
    meta = {"format": POOL_FORMAT, "spec": dataclasses.asdict(spec), "fingerprint": spec.fingerprint(),
            "runtime": renderer.runtime, "parity": renderer.parity.to_dict(), "teacher_source": teacher.source,
            "teacher_kind": teacher.kind}
    pool = Pool(z_all[:n], images[:n], z_all[n:], images[n:], meta)
    save_pool(pool, dest)
    shutil.rmtree(folder, ignore_errors=True)
    return pool


def save_pool(pool: Pool, path: str | Path) -> None:
    tensors = {"train_z": pool.train_z, "train_images": pool.train_images, "val_z": pool.val_z,
               "val_images": pool.val_images}
    write_safetensors(path, tensors, {"meta": json.dumps(pool.meta)})


def load_pool(path: str | Path) -> Pool:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"teacher target pool {path} does not exist; run `dvc repro distill_pool`")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("meta", "{}"))
    if meta.get("format") != POOL_FORMAT:
        raise UserError(f"{path} is not a distillation pool ({meta.get('format')!r} != {POOL_FORMAT!r})")
    t = load_file(str(path))
    return Pool(t["train_z"], t["train_images"], t["val_z"], t["val_images"], meta)


#----------------------------------------------------------------------------
# Batch sources for the trainer. Each batch is a pure function of (seed, step, rank): resume needs no RNG state.


def step_generator(seed: int, step: int, rank: int, salt: int = 0) -> torch.Generator:
    mixed = np.random.SeedSequence([seed, step, rank, salt]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & ((1 << 63) - 1))


class PoolBatches:
    def __init__(self, pool: Pool, seed: int):
        self.pool, self.seed = pool, seed

    def indices(self, step: int, rank: int, batch_size: int) -> torch.Tensor:
        return torch.randint(len(self.pool.train_z), (batch_size,), generator=step_generator(self.seed, step, rank))

    def __call__(self, step: int, rank: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.indices(step, rank, batch_size)
        return self.pool.train_z[idx], self.pool.train_images[idx].float()

    def init_samples(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n training items (for the closed-form head fit)."""
        return self.pool.train_z[:n], self.pool.train_images[:n].float()


class OnlineBatches:
    """Fresh latents every step, rendered by the teacher on `device` (for GPU runs)."""

    def __init__(self, teacher: Teacher, resolution: int, truncation: float, seed: int, device: str):
        self.renderer = TeacherRenderer(teacher, resolution, "torch", device)
        self.truncation, self.seed = truncation, seed

    @torch.no_grad()
    def __call__(self, step: int, rank: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.renderer.model
        z = torch.randn(batch_size, model.style_dim, generator=step_generator(self.seed, step, rank, salt=1))
        w = model.style(z.to(self.renderer.device), self.truncation)
        return z, self.renderer.render(w)

    def init_samples(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        zs, images = zip(*(self._init_one(i) for i in range(n)))
        return torch.cat(zs), torch.cat(images)

    def _init_one(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.renderer.model
        z = torch.randn(1, model.style_dim, generator=step_generator(self.seed, i, 0, salt=2))
        with torch.no_grad():
            return z, self.renderer.render(model.style(z.to(self.renderer.device), self.truncation))
