"""The earlier "EdgeStyleGAN" study's numbers beside ours, with one line of reason per difference.

Facts come from ../shared/docs/study-design.md section 1 ("What the earlier numbers really were"), read from
that study's code and slides; they are constants here so the report states them without re-deriving them.
"""
from __future__ import annotations

from .collect import lookup

EARLIER_TOTAL_PARAMS = 8_852_079            # MobileStyleGAN synthesis incl. training-only frequency heads.
EARLIER_PRUNED_TENSOR_PARAMS = 7_359_744    # Tensors literally named `weight`: modulation Linear + full convs.
EARLIER_SPARSITY = {0.2: 16.63, 0.4: 33.26, 0.6: 49.88, 0.8: 66.51}   # % of all params.
EARLIER_FID = {0.2: 11.8868, 0.4: 13.567}
EARLIER_INT8 = {"params": 3_878_031, "mb": 14.81, "fid": 16.57, "checkpoint_mb": 20.7}
EARLIER_PRUNED_CHECKPOINT_MB = 35.5
EARLIER_MOBILESTYLEGAN = {"mb": 33.78, "fid": 7.75}


def _fmt(x, spec=".2f", scale=1.0, suffix=""):
    return "—" if x is None else f"{x * scale:{spec}}{suffix}"


def comparison_rows(rows: list[dict], side: dict, protocol: dict) -> list[tuple[str, str, str, str]]:
    """(quantity, earlier study, ours, why they differ) for the report's side-by-side table."""
    by_id = {r["variant"]: r for r in rows}
    pruned = sorted((r for r in rows if r["kind"] == "pruned"), key=lambda r: r["amount"])
    teacher, int8 = by_id.get("teacher"), by_id.get("int8")
    space = protocol["space_short"]
    out = []

    ours = " / ".join(f"{r['amount']:g}: {_fmt(r['sparsity_synthesis'], '.2f', 100, ' %')}" for r in pruned) or "—"
    rerun = [f"{r['amount']:g}: {_fmt(r['earlier_recipe_upstream'], '.2f', 100, ' %')}" for r in pruned
             if r.get("earlier_recipe_upstream") is not None]
    out.append(("pruning sparsity over the synthesis network",
                " / ".join(f"{a:g}: {s:.2f} %" for a, s in EARLIER_SPARSITY.items()), ours,
                f"their selection took only tensors named `weight` ({EARLIER_PRUNED_TENSOR_PARAMS:,} of "
                f"{EARLIER_TOTAL_PARAMS:,} params; depthwise/pointwise never pruned), so sparsity = amount x 0.8314; "
                f"ours prunes prune.targets = {protocol.get('prune_targets', '?')} of the exported teacher"
                + (f" (their recipe re-run on the upstream parameter set gives {' / '.join(rerun)})" if rerun else "")))
    ours = " / ".join(f"{r['amount']:g}: {_fmt(r['bytes'], '.2f', 1e-6, ' MB')}" for r in pruned) or "—"
    out.append(("pruned model on disk", f"{EARLIER_PRUNED_CHECKPOINT_MB} MB at every amount", ours,
                "their pruned checkpoints stayed dense (zeros stored); ours store pruned weights sparsely "
                "(the dense size is in the sweep table)"))
    redo = lookup(side.get("size"), "earlier_study_reproduction") or {}
    synth = lookup(side.get("size"), "int8.params.synthesis.params")
    again = redo.get("params_listed_after_dynamic_int8_linear")
    out.append(("int8 parameter count (synthesis network)", f"{EARLIER_INT8['params']:,}", _fmt(synth, ",.0f"),
                "theirs = 8,852,079 minus every nn.Linear weight and bias: quantized Linear keeps packed int8 "
                "weights that `.parameters()` does not list, nothing was removed; ours counts every stored weight"
                + (f" (their counting re-run on the upstream parameter set gives {again:,.0f})" if again else "")))
    claimed = redo.get("mib_claimed_after")
    out.append(("int8 model size", f"{EARLIER_INT8['mb']} MB", _fmt(int8 and int8["bytes"], ".2f", 1e-6, " MB"),
                "theirs = (params + buffers) x 4 bytes under the same miscount; ours = bytes of the int8 file"
                + (f" (their formula re-run gives {claimed:.2f} MiB)" if claimed else "")))
    before = redo.get("mib_claimed_before")
    out.append(("fp32 MobileStyleGAN size", f"{EARLIER_MOBILESTYLEGAN['mb']} MB",
                _fmt(teacher and teacher["bytes"], ".2f", 1e-6, " MB"),
                "theirs = (8,852,079 params + buffers) x 4 bytes in MiB, training heads included"
                + (f" (re-run: {before:.2f} MiB)" if before else "") + "; ours = bytes of the exported generator "
                "file (mapping network and noise maps included, training heads not)"))
    fd = protocol["fd_key"]
    ours = " / ".join(f"{r['amount']:g}: {_fmt(r.get(fd), '.3g')}" for r in pruned if r["amount"] in EARLIER_FID)
    out.append((f"FID after pruning 0.2 / 0.4 (ours: {fd})", " / ".join(f"{v:.2f}" for v in EARLIER_FID.values()),
                ours or "—",
                f"theirs: Inception FID vs clean-fid FFHQ-1024 statistics, N not recorded; ours: {space} vs the "
                f"teacher's samples at N = {protocol['n']} (noise floor {_fmt(teacher and teacher.get(fd), '.3g')}): "
                f"a different space and reference, so only the ordering is comparable"))
    out.append((f"int8 FID (ours: {fd})", f"{EARLIER_INT8['fid']}", _fmt(int8 and int8.get(fd), ".3g"),
                "theirs most likely ran dynamic int8 of the Linear layers only (a fallback), calibrated on one style "
                f"vector; ours is static int8 with {protocol.get('calibration', '?')} calibration styles, measured "
                f"in {space}"))
    out.append((f"MobileStyleGAN FID (ours: teacher noise floor, {fd})", f"{EARLIER_MOBILESTYLEGAN['fid']}",
                _fmt(teacher and teacher.get(fd), ".3g"),
                "theirs used a modified pytorch-fid (per-folder BatchNorm re-normalisation), not standard FID; ours "
                "is the teacher against its own disjoint samples, the floor every variant is read against"))
    return out
