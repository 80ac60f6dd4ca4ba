"""ONNX export of generators and the ONNX runtimes (ONNX Runtime, OpenVINO) behind one calling convention.

Every runner here is callable as `model(z, truncation=1.0) -> images` (torch tensors in, torch float32 [B, 3, R, R]
out, nominal [-1, 1], unclamped) and has `.resolution`, like a `Generator`, so evaluation and latency code can use
any of them. ONNX files written here carry metadata (`format`, `config`, `kind`) so `pipeline.loaders.load_model` can
dispatch on them. The exported graph is z [B, style_dim] + truncation (scalar) -> image, with the fixed noise maps
baked in as constants (noise_mode "fixed", as in the original IR).
"""
from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io.atomic import atomic_path
from ..io.checkpoint import CheckpointError
from ..models.mobilestylegan import Generator, GeneratorConfig, channel_major_packing

FORMAT = "edgestylegan.onnx_generator.v1"
OPSET = 18


class _ZToImage(nn.Module):
    """The exported function: mapping, truncation toward w_avg, synthesis with fixed noise."""

    def __init__(self, gen: Generator):
        super().__init__()
        self.gen = gen

    def forward(self, z: torch.Tensor, truncation: torch.Tensor) -> torch.Tensor:
        w = self.gen.mapping(z)
        w = self.gen.w_avg + truncation * (w - self.gen.w_avg)
        return self.gen.synthesis(w, noise_mode="fixed")


def export_onnx(gen: Generator, path: str | Path, kind: str = "fp32", info: dict | None = None) -> Path:
    """Write `gen` (float) as ONNX (opset 18, dynamic batch, one file) atomically. What is exported is
    `channel_major_packing(gen)`: the same images (to float round-off), each inverse Haar transform one grouped 1x1
    conv and a pixel shuffle (the 1024² teacher on OpenVINO: f32 27 % and NNCF int8 34 % faster than the
    band-major form before it). Parameter names are kept as initializer names (`gen.` + state-dict key);
    the values of the permuted ones are channel_major_packing's, not the state dict's.

    TorchScript exporter: the dynamo exporter (torch.export) took 20 s for the teacher and 15 s for a tiny model on
    two cores, against 5 s, and every quantize, account and OpenVINO evaluation stage exports. The dynamic-batch
    shape arithmetic it leaves in the graph is folded by OpenVINO and ONNX Runtime when they compile, and before
    NNCF quantizes (`compress.quantize.openvino_model`)."""
    import onnx

    path = Path(path)
    module = _ZToImage(channel_major_packing(gen).eval()).eval()
    example = (torch.zeros(2, gen.config.style_dim), torch.tensor(1.0))   # batch 1 would be specialised
    with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(tmp), dynamo=False, opset_version=OPSET, input_names=["z", "truncation"],
                          output_names=["image"], dynamic_axes={"z": {0: "batch"}, "image": {0: "batch"}})
        model = onnx.load(str(tmp))
        set_metadata(model, gen.config, kind, info)
        onnx.save(model, str(tmp))
    return path


def set_metadata(model, config: GeneratorConfig, kind: str, info: dict | None = None) -> None:
    meta = {"format": FORMAT, "config": json.dumps(config.to_dict()), "kind": kind, "info": json.dumps(info or {})}
    keep = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def stamp_onnx_metadata(path: str | Path, config: GeneratorConfig, kind: str, info: dict | None = None) -> None:
    """Rewrite an ONNX file another tool produced (e.g. a quantizer) with `set_metadata`'s keys."""
    import onnx

    model = onnx.load(str(path))
    set_metadata(model, config, kind, info)
    onnx.save(model, str(path))


def save_openvino_ir(model, path: str | Path, config: GeneratorConfig, kind: str, info: dict | None = None) -> Path:
    """Write an OpenVINO model as IR (`path` = the .xml; the weights go to the .bin beside it) with the same
    metadata as `set_metadata`, in the model's rt_info. Both files are written under temporary names and renamed
    together (the .bin first, so a present .xml always has its weights)."""
    import openvino as ov

    path = Path(path)
    meta = {"format": FORMAT, "config": json.dumps(config.to_dict()), "kind": kind, "info": json.dumps(info or {})}
    for key, value in meta.items():
        model.set_rt_info(value, ["edgestylegan", key])
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        staged.with_suffix(".bin").replace(path.with_suffix(".bin"))
        staged.replace(path)
    return path


def ir_metadata(path: str | Path) -> dict:
    import openvino as ov

    path = Path(path)
    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as e:
        raise CheckpointError(f"{path} is not a readable OpenVINO IR model (with its .bin beside it): {e}") from e
    if not model.has_rt_info(["edgestylegan", "format"]):
        raise CheckpointError(f"{path}: OpenVINO IR without edgestylegan metadata; write it with "
                              f"edgestylegan.runtimes.onnx.save_openvino_ir")
    return {key: str(model.get_rt_info(["edgestylegan", key]).astype(str))
            for key in ("format", "config", "kind", "info")}


def generator_metadata(path: str | Path) -> dict:
    """The metadata of an exported generator: ONNX (.onnx) or OpenVINO IR (.xml)."""
    return ir_metadata(path) if Path(path).suffix == ".xml" else onnx_metadata(path)


def onnx_metadata(path: str | Path) -> dict:
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:   # onnx raises DecodeError / OSError / ValueError variants
        raise CheckpointError(f"{path} is not a readable ONNX model: {e}") from e
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: ONNX model without edgestylegan metadata (format {meta.get('format')!r}); "
                              f"export it with edgestylegan.runtimes.onnx.export_onnx")
    return meta


class _OnnxGeneratorBase:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta = generator_metadata(self.path)
        self.config = GeneratorConfig.from_dict(json.loads(meta["config"]))
        self.kind = meta.get("kind", "")
        self.resolution = self.config.resolution
        self.style_dim = self.config.style_dim

    def run_numpy(self, z: np.ndarray, truncation: float) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        z_np = np.ascontiguousarray(z.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.run_numpy(z_np, float(truncation)))

    def eval(self):
        return self


class OnnxRuntimeGenerator(_OnnxGeneratorBase):
    """An exported generator (fp32 or QDQ int8) on ONNX Runtime's CPU execution provider."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        super().__init__(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # No busy-waiting between calls: spinning threads would steal the cores from the runtimes interleaved with
        # this one in a latency run (and from the rest of a pipeline).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def run_numpy(self, z: np.ndarray, truncation: float) -> np.ndarray:
        return self.session.run(None, {"z": z, "truncation": np.asarray(truncation, dtype=np.float32)})[0]


class OpenVINOOnnxGenerator(_OnnxGeneratorBase):
    """An exported generator (ONNX, or OpenVINO IR from `save_openvino_ir`) compiled by OpenVINO for CPU (fp32 graphs
    at f32 precision: the CPU default would be bf16; int8 graphs run their int8 parts in int8), static batch 1. The
    rows of a batch run as `RowsRunner` runs them: concurrently for fp32 graphs, one by one for int8 graphs (see
    there why)."""

    runtime = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "f32"):
        super().__init__(path)
        self.runner = RowsRunner(path, precision, threads, shapes={"z": [1, self.config.style_dim], "truncation": []},
                                 concurrent=self.kind != "int8")
        self.precision = precision

    def run_numpy(self, z: np.ndarray, truncation: float) -> np.ndarray:
        psi = np.asarray(truncation, dtype=np.float32)
        return self.runner([{"z": row[None], "truncation": psi} for row in z])


class RowsRunner:
    """An OpenVINO model with a static batch of 1, run over a list of per-row inputs.

    Rows run on the model compiled with the latency hint (one stream on all threads: what a latency measurement
    times), one by one. With `concurrent`, several rows run at once instead, one per stream of a second compilation
    with the throughput hint, made at the first such call: on the 2-core AVX2 machine, 2 one-thread streams gave
    5-20 % more fp32 1024² generator images per second than one two-thread stream, with identical outputs. Not for
    int8 graphs: there, some throughput compilations (about 1 in 3 processes, same machine) gave images up to 2.0
    away from the latency compilation's, which was the same in every process."""

    def __init__(self, path: str | Path, precision: str = "f32", threads: int | None = None,
                 shapes: dict | None = None, concurrent: bool = True):
        import openvino as ov

        self.model = ov.Core().read_model(str(path))
        if shapes:
            self.model.reshape(shapes)
        self.precision, self.threads, self.concurrent = precision, threads, concurrent
        self.latency = compile_openvino(self.model, precision, threads)
        self._throughput, self._requests = None, []

    def __call__(self, rows: list[dict]) -> np.ndarray:
        if len(rows) == 1 or not self.concurrent:
            return np.concatenate([self.latency(row)[0] for row in rows])
        if self._throughput is None:
            self._throughput = compile_openvino(self.model, self.precision, self.threads, hint="THROUGHPUT")
            count = self._throughput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
            self._requests = [self._throughput.create_infer_request() for _ in range(count)]
        # Plain requests, started and waited here, not an AsyncInferQueue with a Python callback: such callbacks run
        # on OpenVINO's threads and take the GIL, and once (test suite, 2-core EPYC) freeing the compiled model then
        # hung for good: the main thread, holding the GIL, joined an OpenVINO thread that was waiting for it.
        outputs = []
        for start in range(0, len(rows), len(self._requests)):
            chunk = rows[start:start + len(self._requests)]
            running = self._requests[:len(chunk)]
            for request, row in zip(running, chunk):
                request.start_async(row)
            for request in running:
                request.wait()
                outputs.append(request.get_output_tensor(0).data.copy())
        return np.concatenate(outputs)


def compile_openvino(model, precision: str = "f32", threads: int | None = None, shapes: dict | None = None,
                     extra: dict | None = None, hint: str = "LATENCY"):
    """An ONNX or IR file (or an `openvino.Model`) compiled by OpenVINO for CPU at `precision` ("f32": the CPU default
    would be bf16) with the performance `hint` (LATENCY | THROUGHPUT); `shapes` fixes input shapes ({input name:
    shape}); `extra`: more CPU plugin properties. Returns the callable compiled model."""
    import openvino as ov

    core = ov.Core()
    if isinstance(model, (str, Path)):
        model = core.read_model(str(model))
    if shapes:
        model.reshape(shapes)
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(model, "CPU", {**config, **(extra or {})})


def openvino_generator(gen: Generator, threads: int | None = None, precision: str = "f32") -> OpenVINOOnnxGenerator:
    """Compile a float `Generator` with OpenVINO (via a temporary ONNX export). Callable as model(z, truncation)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(gen, Path(tmp) / "generator.onnx")
        runner = OpenVINOOnnxGenerator(path, threads=threads, precision=precision)
    return runner


def load_onnx_generator(path: str | Path) -> OnnxRuntimeGenerator:
    """`pipeline.loaders` loader for format "onnx": the model on ONNX Runtime."""
    return OnnxRuntimeGenerator(path)


def load_openvino_generator(path: str | Path) -> OpenVINOOnnxGenerator:
    """`pipeline.loaders` loader for format "openvino_ir": the model on OpenVINO."""
    return OpenVINOOnnxGenerator(path)
