"""Gather every stage's metrics into one row per variant (the report is a pure function of these files).

The variant list comes from params (report.variants, with `pruned` expanded over prune.amounts), never from
the folders, so stale files of a shrunk sweep are ignored. Files read (all optional except the evaluation):

* metrics/eval/<variant>.json and reports/eval/<variant>.json (+ .png strip): stage evaluate (this package).
* metrics/size.json: stage account, `{<variant id>: {...}}` with params / non-zeros / bytes / MACs / latency.
* metrics/prune/<amount>.json and reports/prune/<amount>_layers.csv: stage prune, sparsity and per-layer sparsity.
* metrics/quantize.json, metrics/distill.json, metrics/teacher.json: stages quantize, distill, fetch_teacher.

Other stages' key names are looked up through `SIZE_FIELDS` / `PRUNE_FIELDS` (first present path wins), the one
place to edit when a producer renames a key.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from ..errors import UserError

#----------------------------------------------------------------------------
# Variants.


@dataclasses.dataclass(frozen=True)
class Variant:
    id: str                       # teacher | pruned-<amount> | int8 | student | student-int8 (file names, CSV rows)
    kind: str                     # teacher | pruned | int8 | student | student-int8
    amount: float | None = None   # Pruning amount for `pruned`.

    @property
    def label(self) -> str:
        return {"teacher": "teacher (noise floor)", "int8": "int8 (operating point)"}.get(self.kind, self.id)


def amount_id(amount: float) -> str:
    """0.2 -> "0.2", the same text DVC's ${item} templating gives for a params.yaml float."""
    return str(float(amount))


def variants_from_params(kinds: list[str], prune_amounts: list[float]) -> list[Variant]:
    out = []
    for kind in kinds:
        if kind == "pruned":
            out += [Variant(f"pruned-{amount_id(a)}", "pruned", float(a)) for a in prune_amounts]
        else:
            out.append(Variant(kind, kind))
    return out


#----------------------------------------------------------------------------
# Reading.


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); rerun the stage that writes it") from e


def lookup(data: dict | None, *paths: str):
    """First value found at one of the dotted `paths` in nested `data` (None if none)."""
    for path in paths:
        node = data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return node
    return None


# Producer keys per report column; first present path wins.
# An entry of metrics/size.json (stage account): size[teacher|student|student-int8], size[pruned][<amount>],
# size[int8].
SIZE_FIELDS = {
    "params": ("params.generator.params",),
    "nonzeros": ("params.generator.nonzero",),
    "bytes": ("bytes.file.bytes", "bytes.sparse"),
    "bytes_dense": ("bytes.dense_fp32",),
    "gmac": ("macs.gmac",),
    "latency": ("latency_ms",),
}
PRUNE_FIELDS = {  # metrics/prune/<amount>.json (stage prune)
    "sparsity_pruned": ("sparsity.targeted",),
    "sparsity_synthesis": ("sparsity.synthesis",),
    "sparsity_all": ("sparsity.generator",),
    "nonzeros": ("params.generator.nonzero",),
    "params": ("params.generator.params",),
    "bytes": ("bytes.sparse",),
    "bytes_dense": ("bytes.dense_fp32",),
    "earlier_recipe_upstream": ("earlier_study_recipe.upstream_parameter_set.sparsity_synthesis",),
}


@dataclasses.dataclass
class Sources:
    root: Path = Path(".")

    def eval_metrics(self, v: Variant) -> Path: return self.root / "metrics" / "eval" / f"{v.id}.json"
    def eval_info(self, v: Variant) -> Path: return self.root / "reports" / "eval" / f"{v.id}.json"
    def strip(self, v: Variant) -> Path: return self.root / "reports" / "eval" / f"{v.id}.png"
    def size(self) -> Path: return self.root / "metrics" / "size.json"
    def prune(self, v: Variant) -> Path: return self.root / "metrics" / "prune" / f"{amount_id(v.amount)}.json"
    def layers(self, v: Variant) -> Path: return self.root / "reports" / "prune" / f"{amount_id(v.amount)}_layers.csv"
    def quantize(self) -> Path: return self.root / "metrics" / "quantize.json"
    def distill(self) -> Path: return self.root / "metrics" / "distill.json"
    def teacher(self) -> Path: return self.root / "metrics" / "teacher.json"


def size_entry(size: dict, v: Variant) -> dict | None:
    """The account stage's record of variant `v`, with `bytes` resolved for the int8 file the evaluation used."""
    if v.kind == "pruned":
        entry = (size.get("pruned") or {}).get(amount_id(v.amount))   # Keys like "0.2": no dotted lookup.
        return entry if isinstance(entry, dict) else None
    entry = size.get(v.kind)
    if v.kind == "int8" and isinstance(entry, dict):
        engine = "int8_onnx" if lookup(entry, "default_engine_is_onnxruntime") != 0 else "int8_torch"
        entry = {**entry, "bytes": {"file": lookup(entry, f"bytes.{engine}") or {}},
                 "macs": entry.get("macs") or size.get("macs")}   # Same convolutions as the float source.
    return entry if isinstance(entry, dict) else None


def _latencies(entry) -> dict[str, float]:
    """{runtime: ms} from a size entry's latency field (a dict of runtimes, possibly nested one level)."""
    node = lookup(entry, *SIZE_FIELDS["latency"])
    if isinstance(node, (int, float)):
        return {"default": float(node)}
    out = {}
    if isinstance(node, dict):
        for runtime, value in node.items():
            if isinstance(value, (int, float)):
                out[runtime] = float(value)
            elif isinstance(value, dict):
                ms = lookup(value, "median_ms", "ms", "mean_ms", "median")
                if isinstance(ms, (int, float)):
                    out[runtime] = float(ms)
    return out


def collect(variants: list[Variant], src: Sources) -> tuple[list[dict], dict]:
    """One flat row per variant (numbers, or None when not measured) and side data for tables and figures."""
    size = read_json(src.size()) or {}
    rows, side = [], {"latency": {}, "per_layer": {}, "info": {}, "missing": []}
    for v in variants:
        m = read_json(src.eval_metrics(v))
        if m is None:
            raise UserError(f"{src.eval_metrics(v)} not found: run `dvc repro` (stage evaluate for {v.id}) or drop "
                            f"`{v.kind}` from report.variants")
        info = read_json(src.eval_info(v)) or {}
        side["info"][v.id] = info
        row = {"variant": v.id, "kind": v.kind, "amount": v.amount, "n": m.get("n"), "resolution": m.get("resolution"),
               "native_resolution": m.get("native_resolution")}
        for key, value in m.items():   # Distribution metrics, named by space (fd_enl0, kid_enl0, fid, ...).
            if isinstance(value, (int, float)) and key not in row:
                row[key] = value
            elif isinstance(value, dict) and set(value) == {"mean", "std"}:
                row[f"{key}_mean"], row[f"{key}_std"] = value["mean"], value["std"]
        for key, value in (m.get("noise_floor") or {}).items():
            if isinstance(value, dict):
                row[f"floor_{key}_mean"] = value.get("mean")
            else:
                row[f"floor_{key}"] = value
        paired = m.get("paired") or {}
        row.update(psnr_db=paired.get("psnr_db"), ssim=paired.get("ssim"),
                   identical_images=paired.get("identical_images"))
        gen = info.get("generation") or {}
        row.update(runtime=gen.get("runtime"), gen_images_per_s=gen.get("images_per_s"))

        entry = size_entry(size, v) if isinstance(size, dict) else None
        if entry is None:
            side["missing"].append(f"{v.id}: no entry in {src.size()} (stage account"
                                   + ("; set account.student: true" if v.kind.startswith("student") else "") + ")")
        prune = read_json(src.prune(v)) if v.kind == "pruned" else None
        for col in ("params", "nonzeros", "bytes", "bytes_dense", "gmac"):
            value = lookup(entry, *SIZE_FIELDS[col])
            if value is None and col in PRUNE_FIELDS:
                value = lookup(prune, *PRUNE_FIELDS[col])
            row[col] = float(value) if isinstance(value, (int, float)) else None
        row["macs"] = None if row.pop("gmac") is None else lookup(entry, *SIZE_FIELDS["gmac"]) * 1e9
        lat = _latencies(entry)
        side["latency"][v.id] = lat
        # int8 kernels differ between runtimes (they are not interchangeable at parity), so the int8 row shows the
        # runtime its quality was measured on; float variants show their fastest runtime.
        engine = (gen.get("runtime") or "").split("-")[0]
        is_int8 = v.kind in ("int8", "student-int8")
        same = {k: ms for k, ms in lat.items() if k.startswith(engine)} if is_int8 and engine else lat
        best = min(same.items(), key=lambda kv: kv[1]) if same else (None, None)
        row["latency_runtime"], row["latency_ms"] = best
        for col in ("sparsity_pruned", "sparsity_synthesis", "sparsity_all", "earlier_recipe_upstream"):
            value = lookup(prune, *PRUNE_FIELDS[col])
            row[col] = float(value) if isinstance(value, (int, float)) else None
        if v.kind == "teacher":
            row.update(sparsity_pruned=0.0, sparsity_synthesis=0.0, sparsity_all=0.0)
        if v.kind == "pruned" and src.layers(v).is_file():
            with open(src.layers(v), newline="") as f:
                side["per_layer"][v.id] = {r["tensor"]: float(r["sparsity"]) for r in csv.DictReader(f)}
        rows.append(row)
    side["size"] = size
    side["quantize"] = read_json(src.quantize())
    side["distill"] = read_json(src.distill())
    side["teacher"] = read_json(src.teacher())
    return rows, side
