"""The earlier "EdgeStyleGAN" study's and the MobileStyleGAN paper's numbers beside ours, one reason per difference.

Their numbers are constants, labelled as theirs wherever the report shows them: the earlier study's come from
../shared/docs/study-design.md section 1 ("What the earlier numbers really were"), read from that study's code and
slides; the paper's compute figure from the MobileStyleGAN paper. Nothing here is written to metrics/.
"""
from __future__ import annotations

EARLIER_TOTAL_PARAMS = 8_852_079            # MobileStyleGAN synthesis incl. training-only frequency heads.
EARLIER_PRUNED_TENSOR_PARAMS = 7_359_744    # Tensors literally named `weight`: modulation Linear + full convs.
EARLIER_SPARSITY = {0.2: 16.63, 0.4: 33.26, 0.6: 49.88, 0.8: 66.51}   # % of all params.
EARLIER_FID = {0.2: 11.8868, 0.4: 13.567}
EARLIER_INT8 = {"params": 3_878_031, "mb": 14.81, "fid": 16.57, "checkpoint_mb": 20.7}
EARLIER_PRUNED_CHECKPOINT_MB = 35.5
EARLIER_MOBILESTYLEGAN = {"mb": 33.78, "fid": 7.75}
PAPER_GMAC = 15.09                          # The MobileStyleGAN paper's "GMAC" of its generator.

FID_KEY = "fid_vs_teacher"   # metrics.features.SPACES["inception"].fd_key
HEADER = ["quantity", "theirs (earlier study / paper constants)", "ours (measured here)",
          f"ours in their feature space: `{FID_KEY}` (Inception-v3 FID vs the teacher's own samples)",
          "why they differ"]


def _fmt(x, spec=".2f", scale=1.0, suffix=""):
    return "—" if x is None else f"{x * scale:{spec}}{suffix}"


def comparison_rows(rows: list[dict], teacher_size, protocol: dict) -> list[tuple[str, str, str, str, str]]:
    """(quantity, theirs, ours, ours like for like, why they differ) for the report's side-by-side table.
    `teacher_size`: the teacher's `SizeRecord` (its earlier-study counting re-run and MACs); `rows`: `collect.row_of`
    rows. The like-for-like column holds our Inception FID where their number is an Inception FID ("—" elsewhere:
    not a feature-space quantity, or `inception` not in eval.feature_spaces)."""
    by_id = {r["variant"]: r for r in rows}
    pruned = sorted((r for r in rows if r["kind"] == "pruned"), key=lambda r: r["amount"])
    teacher, int8 = by_id.get("teacher"), by_id.get("int8")
    fd, space, n = protocol["fd_key"], protocol["space_short"], protocol["n"]
    ours_space = f"our `{fd}` ({space} vs the teacher's own samples, N = {n})"
    their_fid = "their FID (Inception-v3 vs clean-fid FFHQ-1024 statistics, N not recorded)"
    redo = (teacher_size.earlier_study_reproduction or {}) if teacher_size else {}
    out = []
    na = "—"
    inception_n = f" (N = {n}; their reference was FFHQ statistics, ours the teacher's samples: different references)"

    ours = " / ".join(f"{r['amount']:g}: {_fmt(r['sparsity_synthesis'], '.2f', 100, ' %')}" for r in pruned) or "—"
    rerun = [f"{r['amount']:g}: {_fmt(r['earlier_recipe_upstream'], '.2f', 100, ' %')}" for r in pruned]
    out.append(("pruning sparsity over the synthesis network",
                " / ".join(f"{a:g}: {s:.2f} %" for a, s in EARLIER_SPARSITY.items()), ours, na,
                f"their selection took only tensors named `weight` ({EARLIER_PRUNED_TENSOR_PARAMS:,} of "
                f"{EARLIER_TOTAL_PARAMS:,} params; depthwise/pointwise never pruned), so sparsity = amount x 0.8314; "
                f"ours prunes prune.targets = {protocol.get('prune_targets', '?')} of the exported teacher"
                + (f" (their recipe re-run on the upstream parameter set gives {' / '.join(rerun)})" if rerun else "")))
    ours = " / ".join(f"{r['amount']:g}: {_fmt(r['bytes'], '.2f', 1e-6, ' MB')}" for r in pruned) or "—"
    out.append(("pruned model on disk", f"{EARLIER_PRUNED_CHECKPOINT_MB} MB at every amount", ours, na,
                "their pruned checkpoints stayed dense (zeros stored); ours store pruned weights sparsely "
                "(the dense size is in the sweep table)"))
    again = redo.get("params_listed_after_dynamic_int8_linear")
    out.append(("int8 parameter count (synthesis network)", f"{EARLIER_INT8['params']:,} (`.parameters()` listed)",
                _fmt(int8 and int8.get("params_synthesis"), ",.0f"), na,
                "theirs = 8,852,079 minus every nn.Linear weight and bias: quantized Linear keeps packed int8 "
                "weights that `.parameters()` does not list, nothing was removed; ours counts every stored weight"
                + (f" (their counting re-run on the upstream parameter set gives {again:,.0f})" if again else "")))
    claimed = redo.get("mib_claimed_after")
    out.append(("int8 model size", f"{EARLIER_INT8['mb']} MB ((params + buffers) x 4 bytes)",
                _fmt(int8 and int8["bytes"], ".2f", 1e-6, " MB (file)"), na,
                "theirs = (params + buffers) x 4 bytes under the same miscount; ours = bytes of the int8 file"
                + (f" (their formula re-run gives {claimed:.2f} MiB)" if claimed else "")))
    before = redo.get("mib_claimed_before")
    out.append(("fp32 MobileStyleGAN size", f"{EARLIER_MOBILESTYLEGAN['mb']} MB ((params + buffers) x 4 bytes)",
                _fmt(teacher and teacher["bytes"], ".2f", 1e-6, " MB (file)"), na,
                "theirs = (8,852,079 params + buffers) x 4 bytes in MiB, training heads included"
                + (f" (re-run: {before:.2f} MiB)" if before else "") + "; ours = bytes of the exported generator "
                "file (mapping network and noise maps included, training heads not)"))
    if teacher_size:
        all_heads = teacher_size.macs["all_heads"]["gmac"]
        out.append(("compute per image", f"{PAPER_GMAC} \"GMAC\" at 1024 px (MobileStyleGAN paper)",
                    f"{teacher_size.macs['gmac']:.2f} GMAC at {teacher_size.latency_setup['resolution']} px; "
                    f"{all_heads:.2f} GMAC with every training head", na,
                    f"the paper's figure is {PAPER_GMAC / all_heads:.2f} x our count for the net with all heads (at "
                    "1024 px about 2: it counts multiply and add separately); ours counts one MAC per weight x "
                    "activation multiply-accumulate (analytic, from the shapes)"))
    def like(r):
        return _fmt(r and r.get(FID_KEY), ".3g")

    fid_floor = f"our Inception floor is {like(teacher)}, our `{fd}` floor {_fmt(teacher and teacher.get(fd), '.3g')}"
    ours = " / ".join(f"{r['amount']:g}: {_fmt(r.get(fd), '.3g')}" for r in pruned if r["amount"] in EARLIER_FID)
    same = " / ".join(f"{r['amount']:g}: {like(r)}" for r in pruned if r["amount"] in EARLIER_FID)
    out.append((f"after pruning {' / '.join(f'{a:g}' for a in EARLIER_FID)}: {their_fid} vs {ours_space}",
                " / ".join(f"{v:.2f}" for v in EARLIER_FID.values()), ours or "—", (same or "—") + inception_n,
                f"the `{fd}` column is another feature space; the Inception column is the same feature space but a "
                f"different reference and pruning recipe ({fid_floor}), so only the ordering is comparable"))
    out.append((f"int8: {their_fid} vs {ours_space}", f"{EARLIER_INT8['fid']}", _fmt(int8 and int8.get(fd), ".3g"),
                like(int8) + inception_n,
                "theirs most likely ran dynamic int8 of the Linear layers only (a fallback), calibrated on one style "
                f"vector; ours is static int8 with {protocol.get('calibration', '?')} calibration styles; references "
                "differ"))
    out.append(("fp32 MobileStyleGAN: their FID (a modified pytorch-fid with per-folder BatchNorm "
                f"re-normalisation) vs our noise floor `{fd}` (teacher vs its own disjoint samples, N = {n})",
                f"{EARLIER_MOBILESTYLEGAN['fid']}", _fmt(teacher and teacher.get(fd), ".3g"),
                like(teacher) + " (our Inception noise floor: teacher vs its own disjoint samples)",
                "theirs is not standard FID and used FFHQ as reference; ours is the floor every variant is read "
                "against"))
    return out
