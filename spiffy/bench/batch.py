"""Spiffy on a batch: what decoding rows together (one verification forward for every row that needs
a call) gains over decoding the same prompts one at a time.

For each batch size N the prompts are cut into groups of N (a tail shorter than N is left out); every
group is decoded by the batched baseline and by Spiffy on the whole group, and Spiffy also decodes the
group's prompts one at a time (batch 1, the reference); each of the three is timed twice, in alternating
order, and its fastest time kept. Reported per (setting, budget, N): tokens/s of
each, Spiffy's throughput gain over one-at-a-time Spiffy and over the batched baseline, model calls,
and whether every row equals the baseline's.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

from ..sampling.baseline import generate_baseline
from ..speculative import generate_speculative


def fastest_alternating(runs: dict, repeats: int) -> tuple:
    """Run each of ``runs`` (name -> callable) ``repeats`` times, in alternating order (so a change in the
    machine's load hits them alike); returns (name -> last result, name -> fastest seconds)."""
    best, out = {}, {}
    for r in range(repeats):
        for name in (list(runs) if r % 2 == 0 else list(reversed(runs))):
            t = time.perf_counter()
            out[name] = runs[name]()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    return out, best


def measure_group(backend, group: list, cfg, spec, repeats: int = 2) -> dict:
    """Decode ``group`` three ways; each is timed ``repeats`` times, in alternating order (so a change in
    the machine's load hits all three alike), and its fastest time kept."""
    runs = {"base": lambda: [generate_baseline(backend, group, cfg)],
            "batch": lambda: [generate_speculative(backend, group, cfg, spec)],
            "alone": lambda: [generate_speculative(backend, [p], cfg, spec) for p in group]}
    out, best = fastest_alternating(runs, repeats)
    base, batch, alone = out["base"][0], out["batch"][0], out["alone"]
    return {"tokens": sum(len(r) for r in base.token_ids), "base_s": best["base"], "batch_s": best["batch"],
            "alone_s": best["alone"], "base_nfe": base.nfe, "batch_nfe": batch.nfe, "alone_nfe": sum(a.nfe for a in alone),
            "identical": sum(a == b for a, b in zip(batch.token_ids, base.token_ids)),
            "alone_identical": sum(a.token_ids[0] == b for a, b in zip(alone, base.token_ids))}


def run_batch_bench(backend, prompts: Sequence[list], plan: list, sizes: Sequence[int],
                    progress: Optional[Callable[[str], None]] = None) -> list:
    """``plan``: (setting name, cfg, {budget: spec}) triples. Returns one row per (setting, budget, size)."""
    say = progress or (lambda s: None)
    rows = []
    for name, cfg, specs in plan:
        for D, spec in specs.items():
            for n in sizes:
                groups = [list(prompts[i:i + n]) for i in range(0, len(prompts) - n + 1, n)]
                recs = []
                for g in groups:
                    recs.append(measure_group(backend, g, cfg, spec))
                    say(f"{name} D={D} batch {n}: {len(recs)}/{len(groups)} groups")
                tot = {k: sum(r[k] for r in recs) for k in recs[0]} if recs else {}
                if not recs:
                    continue
                tps = {k: tot["tokens"] / tot[f"{k}_s"] for k in ("base", "batch", "alone")}
                rows.append({"setting": name, "budget": D, "batch": n, "prompts": len(groups) * n,
                             "baseline_tokens_per_s": round(tps["base"], 3),
                             "spiffy_batch_tokens_per_s": round(tps["batch"], 3),
                             "spiffy_one_at_a_time_tokens_per_s": round(tps["alone"], 3),
                             "gain_over_one_at_a_time": round(tps["batch"] / tps["alone"], 4),
                             "gain_over_batched_baseline": round(tps["batch"] / tps["base"], 4),
                             "baseline_nfe": tot["base_nfe"], "spiffy_batch_nfe": tot["batch_nfe"],
                             "spiffy_one_at_a_time_nfe": tot["alone_nfe"],
                             "identical_rows": tot["identical"], "identical_rows_one_at_a_time": tot["alone_identical"]})
    return rows


def markdown(rows: list) -> str:
    head = ("| setting | D | batch | prompts | baseline tok/s | Spiffy batched tok/s | Spiffy one at a time tok/s | "
            "gain vs one at a time | gain vs batched baseline | NFE base / batched / one at a time | identical |")
    out = [head, "|" + "---|" * 11]
    for r in rows:
        out.append(f"| {r['setting']} | {r['budget']} | {r['batch']} | {r['prompts']} | {r['baseline_tokens_per_s']:.2f} | "
                   f"{r['spiffy_batch_tokens_per_s']:.2f} | {r['spiffy_one_at_a_time_tokens_per_s']:.2f} | "
                   f"{r['gain_over_one_at_a_time']:.2f}x | {r['gain_over_batched_baseline']:.2f}x | "
                   f"{r['baseline_nfe']} / {r['spiffy_batch_nfe']} / {r['spiffy_one_at_a_time_nfe']} | "
                   f"{r['identical_rows']}/{r['prompts']} |")
    return "\n".join(out)
