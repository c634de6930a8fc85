"""Static shapes and compiled steps: the baseline and Spiffy, eager and ``torch.compile``-d, on the same prompts.

Per prompt, eager: the plain baseline, the static baseline (``GenerationConfig.static_drafts = D``), plain
Spiffy and static Spiffy; then, after ``backend.compile()``: the plain baseline, the static baseline and static
Spiffy. Before the compiled runs of a prompt one untimed decode of each compiles its shapes (a new prompt length
is a new shape); compile seconds are reported apart. Each decode is timed ``repeats`` times in alternating order
and its fastest time kept. Reported per (setting, budget): tokens/s of each, NFE, and whether static Spiffy's
tokens equal the static baseline's (eager and compiled: the same computation, so they must) and the plain
baseline's.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

from ..sampling.baseline import generate_baseline
from ..speculative import generate_speculative
from ..speculative.decoder import static_baseline_config
from .batch import fastest_alternating


def measure_prompt(eager, compiled, prompt: list, cfg, scfg, spec, repeats: int = 2) -> dict:
    """``eager`` and ``compiled``: two backends over the same weights (the second ``.compile()``-d); ``scfg``: the
    static baseline's configuration (:func:`~spiffy.speculative.decoder.static_baseline_config`), at which static
    Spiffy runs too, so both sides have one shape by construction."""
    sspec = dataclasses.replace(spec, static=True)
    p = [prompt]
    runs = {"base": lambda: generate_baseline(eager, p, cfg), "base_static": lambda: generate_baseline(eager, p, scfg),
            "spiffy": lambda: generate_speculative(eager, p, cfg, spec),
            "spiffy_static": lambda: generate_speculative(eager, p, scfg, sspec)}
    out, best = fastest_alternating(runs, repeats)
    crun = {"base_c": lambda: generate_baseline(compiled, p, cfg),
            "base_static_c": lambda: generate_baseline(compiled, p, scfg),
            "spiffy_static_c": lambda: generate_speculative(compiled, p, scfg, sspec)}
    t = time.perf_counter()
    for f in crun.values():   # compiles this prompt's shapes
        f()
    compile_s = time.perf_counter() - t
    cout, cbest = fastest_alternating(crun, repeats)
    out.update(cout)
    best.update(cbest)
    tok = lambda k: out[k].token_ids[0]   # noqa: E731
    return {"tokens": len(tok("base")), "seconds": best, "nfe": {k: v.nfe for k, v in out.items()},
            "compile_s": compile_s,
            "static_equals_static_baseline": tok("spiffy_static") == tok("base_static"),
            "compiled_static_equals_compiled_static_baseline": tok("spiffy_static_c") == tok("base_static_c"),
            "static_equals_plain_baseline": tok("spiffy_static") == tok("base"),
            "compiled_equals_eager": tok("spiffy_static_c") == tok("spiffy_static")}


def run_static_bench(backend, prompts: Sequence[list], plan: list, repeats: int = 2,
                     progress: Optional[Callable[[str], None]] = None) -> list:
    """``plan``: (setting name, cfg, {budget: spec}). One row per (setting, budget)."""
    say = progress or (lambda s: None)
    import copy

    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)  # a graph per shape
    compiled = copy.copy(backend).compile()
    rows = []
    for name, cfg, specs in plan:
        for D, spec in specs.items():
            recs = []
            scfg = static_baseline_config(backend, cfg, spec)
            for i, p in enumerate(prompts):
                recs.append(measure_prompt(backend, compiled, p, cfg, scfg, spec, repeats))
                say(f"{name} D={D}: {i + 1}/{len(prompts)} prompts")
            tokens = sum(r["tokens"] for r in recs)
            keys = recs[0]["seconds"]
            secs = {k: sum(r["seconds"][k] for r in recs) for k in keys}
            row = {"setting": name, "budget": D, "prompts": len(recs), "tokens": tokens,
                   "tokens_per_s": {k: round(tokens / secs[k], 3) for k in keys},
                   "nfe": {k: sum(r["nfe"][k] for r in recs) for k in keys},
                   "compile_s": round(sum(r["compile_s"] for r in recs), 1)}
            for k in ("static_equals_static_baseline", "compiled_static_equals_compiled_static_baseline",
                      "static_equals_plain_baseline", "compiled_equals_eager"):
                row[k] = sum(r[k] for r in recs)
            rows.append(row)
    return rows


def markdown(rows: list) -> str:
    cols = [("base", "baseline"), ("base_static", "static baseline"), ("spiffy", "Spiffy"),
            ("spiffy_static", "static Spiffy"), ("base_c", "compiled baseline"),
            ("base_static_c", "compiled static baseline"), ("spiffy_static_c", "compiled static Spiffy")]
    out = ["| setting | D | prompts | " + " | ".join(f"{c} tok/s (NFE)" for _, c in cols) +
           " | static Spiffy = static baseline (eager / compiled) | = plain baseline | compile s |",
           "|" + "---|" * (len(cols) + 6)]
    for r in rows:
        n = r["prompts"]
        cells = " | ".join(f"{r['tokens_per_s'][k]:.1f} ({r['nfe'][k]})" for k, _ in cols)
        out.append(f"| {r['setting']} | {r['budget']} | {n} | {cells} | {r['static_equals_static_baseline']}/{n} / "
                   f"{r['compiled_static_equals_compiled_static_baseline']}/{n} | {r['static_equals_plain_baseline']}/{n} | "
                   f"{r['compile_s']} |")
    return "\n".join(out)
