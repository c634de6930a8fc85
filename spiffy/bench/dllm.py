"""Baseline vs Spiffy on the same prompts, in one process.

For every setting (cache mode x tokens per step / threshold) the baseline decodes each prompt once;
Spiffy then decodes it at every budget. Reported per (setting, budget): NFE ratio (baseline NFE /
Spiffy NFE, summed over prompts), wall-clock ratio, tokens/s, identical-output rate against the
baseline, mean accepted drafts per round, and optionally the NFE predicted by replaying the
baseline's own traces with the same graph (must equal the measured NFE) and the ceiling any graph of
that budget could reach on those traces. A vanilla reference (cache none, one token per step, the
baseline) gives the combined tokens/s gain of each Spiffy setting over plain sampling.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..sampling.baseline import generate_baseline
from ..sampling.loop import sampler_of
from ..sampling.config import GenerationConfig
from ..atomic import atomic_write_json, atomic_write_text
from ..speculative import SpeculativeConfig, generate_speculative
from ..speculative.calibrated import calibrated_graph_for, load_graph_artifact
from ..speculative.replay import ceiling_nfe, provider_for, replay_trace, trace_baseline

# Spiffy paper, LLaDA-8B, gen 256, block 32, 1 token/step: NFE reduction range over four benchmarks
PAPER_NFE_REDUCTION = {3: (2.24, 2.40), 5: (2.50, 2.71), 8: (2.74, 3.00), 10: (2.80, 3.07)}


@dataclass
class Setting:
    cache: str = "none"
    threshold: Optional[float] = None
    tokens_per_step: int = 1

    @property
    def name(self) -> str:
        step = f"thr{self.threshold:g}" if self.threshold is not None else f"k{self.tokens_per_step}"
        return f"cache={self.cache},{step}"

    def config(self, base: GenerationConfig) -> GenerationConfig:
        if self.threshold is not None:
            return replace(base, cache=self.cache, threshold=self.threshold, tokens_per_step=None, steps=None)
        return replace(base, cache=self.cache, threshold=None, tokens_per_step=self.tokens_per_step, steps=None)


@dataclass
class Row:
    setting: str
    budget: int
    prompts: int = 0
    base_nfe: int = 0
    nfe: int = 0
    predicted_nfe: Optional[int] = None
    ceiling_nfe: Optional[int] = None
    base_wall_s: float = 0.0
    wall_s: float = 0.0
    tokens: int = 0
    identical: int = 0
    rounds: int = 0
    accepted: int = 0
    model_s: float = 0.0
    drafting_s: float = 0.0
    bookkeeping_s: float = 0.0
    mismatches: Optional[int] = None
    graph_source: str = "default"
    projected: dict = field(default_factory=dict)   # cost table -> [baseline s, Spiffy s] (spiffy.bench.cost_model)
    per_prompt_nfe_ratio: list = field(default_factory=list)
    per_prompt_wall_ratio: list = field(default_factory=list)

    def summary(self, vanilla_tps: Optional[float]) -> dict:
        d = dict(self.__dict__)
        d["nfe_ratio"] = round(self.base_nfe / self.nfe, 4) if self.nfe else None
        d["wall_ratio"] = round(self.base_wall_s / self.wall_s, 4) if self.wall_s else None
        # medians over prompts (the totals above weight long decodes more)
        d["nfe_ratio_median"] = round(statistics.median(self.per_prompt_nfe_ratio), 4) if self.per_prompt_nfe_ratio else None
        d["wall_ratio_median"] = (round(statistics.median(self.per_prompt_wall_ratio), 4)
                                  if self.per_prompt_wall_ratio else None)
        d["base_tokens_per_s"] = round(self.tokens / self.base_wall_s, 3) if self.base_wall_s else None
        d["tokens_per_s"] = round(self.tokens / self.wall_s, 3) if self.wall_s else None
        d["identical_rate"] = round(self.identical / self.prompts, 4) if self.prompts else None
        d["mean_accepted_per_round"] = round(self.accepted / self.rounds, 4) if self.rounds else 0.0
        if self.ceiling_nfe:
            d["ceiling_nfe_ratio"] = round(self.base_nfe / self.ceiling_nfe, 4)
        if self.predicted_nfe is not None:
            d["predicted_equals_measured"] = self.predicted_nfe == self.nfe
        d["projected"] = {}
        for name, (base_s, s) in self.projected.items():   # a model's figures, not measured here
            ratio = base_s / s
            d["projected"][name] = {"baseline_s": round(base_s, 4), "spiffy_s": round(s, 4),
                                    "wall_ratio": round(ratio, 4),
                                    "fraction_of_nfe_ratio": round(ratio / d["nfe_ratio"], 4) if d["nfe_ratio"] else None}
        if vanilla_tps and d["tokens_per_s"]:
            d["tokens_per_s_gain_vs_vanilla"] = round(d["tokens_per_s"] / vanilla_tps, 4)
        overhead = self.drafting_s + self.bookkeeping_s
        d["overhead_share"] = round(overhead / self.wall_s, 4) if self.wall_s else None
        for k in ("base_wall_s", "wall_s", "model_s", "drafting_s", "bookkeeping_s"):
            d[k] = round(d[k], 4)
        return d


def resolve_specs(backend, cfg: GenerationConfig, budgets: Sequence[int], verify: str, graph, prune,
                  use_calibration: bool, allow_mismatch: bool) -> dict:
    """{D: (SpeculativeConfig, graph source)}: a calibrated graph when one exists and
    ``use_calibration``, else the default (or ``graph``); resolved once, before decoding."""
    specs = {}
    for D in budgets:
        spec = SpeculativeConfig(budget=D, verify=verify, graph=graph, prune=prune, use_calibration=False,
                                 allow_mismatch=allow_mismatch).validate()    # a bad --prune fails before decoding
        source = "default"
        if graph is None and use_calibration:
            path = calibrated_graph_for(backend, cfg, sampler_of(backend, cfg), D)
            if path is not None:
                spec.graph = load_graph_artifact(path, backend, allow_mismatch=allow_mismatch)   # the decoder's own checks
                source = f"calibrated:{path}"
        specs[D] = (spec, source)
    return specs


def measure_prompt(backend, p: list, plan: list, vanilla_cfg: Optional[GenerationConfig], predict: bool,
                   ceiling: bool) -> dict:
    """Every decode of one prompt: the vanilla reference, then per setting of ``plan`` ((cfg, specs)
    pairs) the baseline and Spiffy at each budget, in this process (so the per-prompt ratios compare
    runs on the same device). Plain numbers and token ids only (it travels between ranks)."""
    rec = {"vanilla": None, "settings": []}
    if vanilla_cfg is not None:
        r = generate_baseline(backend, [p], vanilla_cfg)
        rec["vanilla"] = {"wall_s": r.wall_s, "tokens": len(r.token_ids[0]), "nfe": r.nfe}
    for cfg, specs in plan:
        trace = None
        if predict or ceiling:    # one baseline decode, traced (its wall_s leaves the tracing out)
            base, trace = trace_baseline(backend, p, cfg, k=4)
        else:
            base = generate_baseline(backend, [p], cfg)
        runs = {}
        for D, (spec, _) in specs.items():
            res = generate_speculative(backend, [p], cfg, spec)
            st = res.stats
            run = {"nfe": res.nfe, "wall_s": res.wall_s, "tokens": res.token_ids[0], "rounds": st.rounds,
                   "accepted": st.accepted, "model_s": st.model_s, "drafting_s": st.drafting_s,
                   "bookkeeping_s": st.bookkeeping_s, "exact": st.exact, "calls": res.calls}
            if trace is not None and predict:
                provider, _ = provider_for(backend, cfg, spec)
                run["predicted_nfe"] = replay_trace(trace, provider, spec.pruner())
            if trace is not None and ceiling:
                run["ceiling_nfe"] = ceiling_nfe(trace, D)
            runs[D] = run
        rec["settings"].append({"base": {"nfe": base.nfe, "wall_s": base.wall_s, "tokens": base.token_ids[0],
                                         "calls": base.calls},
                                "runs": runs})
    return rec


def run_dllm_bench(backend, prompts: Sequence[list], settings: Sequence[Setting], budgets: Sequence[int],
                   base_cfg: GenerationConfig, verify: str = "batch", predict: bool = False, ceiling: bool = False,
                   vanilla: bool = True, graph=None, prune=None, progress: Optional[Callable[[str], None]] = None,
                   use_calibration: bool = True, allow_mismatch: bool = False, sharding=None,
                   costs=()) -> Optional[dict]:
    """Run the benchmark; returns {"vanilla": {...}, "rows": [Row.summary ...], "outputs": [...]}
    (``outputs``: per prompt and setting, the baseline's and each budget's token ids). The draft graph
    of each (setting, budget) is resolved once, before decoding, so every prompt, and the replay, use
    the same graph. ``sharding`` (:class:`spiffy.distributed.Sharding`): prompts spread over the ranks
    of a torchrun job; rank 0 aggregates and returns the result, the other ranks return None."""
    from ..backends.fingerprint import model_fingerprint
    from ..distributed import Sharding

    say = progress or (lambda s: None)
    sharding = sharding or Sharding(save=False)
    plan = []
    for st in settings:
        cfg = st.config(base_cfg)
        plan.append((cfg, resolve_specs(backend, cfg, budgets, verify, graph, prune, use_calibration, allow_mismatch)))
    vanilla_cfg = Setting("none", None, 1).config(base_cfg) if vanilla else None
    job = {"model": model_fingerprint(backend), "base": base_cfg.to_dict(), "settings": [s.name for s in settings],
           "budgets": list(budgets), "verify": verify, "graph": str(graph), "prune": prune, "predict": predict,
           "ceiling": ceiling, "vanilla": vanilla, "use_calibration": use_calibration,
           "graphs": [[src for _, src in specs.values()] for _, specs in plan], "prompts": prompts}
    done = [0]

    def one(p):
        rec = measure_prompt(backend, p, plan, vanilla_cfg, predict, ceiling)
        done[0] += 1
        say(f"{done[0]} prompt(s) decoded")
        return rec

    records = sharding.map(list(prompts), one, "bench", job)
    if records is None:
        return None
    return aggregate(records, settings, plan, vanilla, costs)


def aggregate(records: list, settings: Sequence[Setting], plan: list, vanilla: bool, costs=()) -> dict:
    """Rows of the benchmark from the per-prompt records of :func:`measure_prompt` (in prompt order); ``costs``
    (:class:`~spiffy.costs.CostTable` s) add each row's projected seconds from its calls' shapes."""
    out = {"rows": [], "outputs": []}
    vanilla_tps = None
    if vanilla:
        wall = sum(r["vanilla"]["wall_s"] for r in records)
        tokens = sum(r["vanilla"]["tokens"] for r in records)
        vanilla_tps = tokens / wall if wall else None
        out["vanilla"] = {"setting": "cache=none,k1 (baseline)", "nfe": sum(r["vanilla"]["nfe"] for r in records),
                          "wall_s": round(wall, 4), "tokens_per_s": round(vanilla_tps, 3) if vanilla_tps else None}
    for i, (st, (_, specs)) in enumerate(zip(settings, plan)):
        rows = {D: Row(st.name, D, graph_source=src) for D, (_, src) in specs.items()}
        for j, rec in enumerate(records):
            base = rec["settings"][i]["base"]
            out["outputs"].append({"prompt": j, "setting": st.name, "baseline": base["tokens"],
                                   "spiffy": {str(D): run["tokens"] for D, run in rec["settings"][i]["runs"].items()}})
            for D, run in rec["settings"][i]["runs"].items():
                row = rows[D]
                row.prompts += 1
                row.base_nfe += base["nfe"]
                row.nfe += run["nfe"]
                row.base_wall_s += base["wall_s"]
                row.wall_s += run["wall_s"]
                row.per_prompt_nfe_ratio.append(base["nfe"] / run["nfe"])
                row.per_prompt_wall_ratio.append(base["wall_s"] / run["wall_s"])
                row.tokens += len(run["tokens"])
                row.identical += int(run["tokens"] == base["tokens"])
                row.rounds += run["rounds"]
                row.accepted += run["accepted"]
                row.model_s += run["model_s"]
                row.drafting_s += run["drafting_s"]
                row.bookkeeping_s += run["bookkeeping_s"]
                for cost in costs:
                    acc = row.projected.setdefault(cost.name, [0.0, 0.0])
                    acc[0] += cost.price(base["calls"])
                    acc[1] += cost.price(run["calls"])
                if not run["exact"]:
                    row.mismatches = (row.mismatches or 0) + int(run["tokens"] != base["tokens"])
                if "predicted_nfe" in run:
                    row.predicted_nfe = (row.predicted_nfe or 0) + run["predicted_nfe"]
                if "ceiling_nfe" in run:
                    row.ceiling_nfe = (row.ceiling_nfe or 0) + run["ceiling_nfe"]
        out["rows"] += [rows[D].summary(vanilla_tps) for D in rows]
    return out


def markdown_table(result: dict, predict: bool, ceiling: bool) -> str:
    cols = ["data", "setting", "D", "base NFE", "Spiffy NFE", "NFE ratio", "median NFE ratio"]
    if predict:
        cols += ["replay-predicted NFE"]
    if ceiling:
        cols += ["ceiling ratio"]
    projected = sorted({name for r in result["rows"] for name in r.get("projected") or {}})
    cols += [f"projected wall ratio ({name})" for name in projected]
    cols += ["graph", "identical", "accepted/round", "wall ratio", "median wall ratio", "base tok/s", "Spiffy tok/s", "tok/s vs vanilla",
             "overhead"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        vals = [r.get("dataset", "-"), r["setting"], r["budget"], r["base_nfe"], r["nfe"], f"{r['nfe_ratio']:.2f}x",
                f"{r['nfe_ratio_median']:.2f}x" if r.get("nfe_ratio_median") else "-"]
        if predict:
            vals.append(f"{r['predicted_nfe']}" + ("" if r.get("predicted_equals_measured") else " (differs!)"))
        if ceiling:
            vals.append(f"{r.get('ceiling_nfe_ratio', 0):.2f}x")
        for name in projected:
            p = (r.get("projected") or {}).get(name)
            vals.append(f"{p['wall_ratio']:.2f}x ({p['fraction_of_nfe_ratio']:.2f} of NFE)" if p else "-")
        vals += ["calibrated" if r.get("graph_source", "").startswith("calibrated") else "default",
                 f"{100 * r['identical_rate']:.0f}%", f"{r['mean_accepted_per_round']:.2f}",
                 f"{r['wall_ratio']:.2f}x", f"{r['wall_ratio_median']:.2f}x" if r.get("wall_ratio_median") else "-",
                 f"{r['base_tokens_per_s']:.1f}", f"{r['tokens_per_s']:.1f}",
                 f"{r['tokens_per_s_gain_vs_vanilla']:.2f}x" if r.get("tokens_per_s_gain_vs_vanilla") else "-",
                 f"{100 * r['overhead_share']:.1f}%" if r.get("overhead_share") is not None else "-"]
        lines.append("| " + " | ".join(str(v) for v in vals) + " |")
    for name, v in (result.get("vanilla") or {}).items():
        lines.append("")
        lines.append(f"Vanilla reference on {name} (baseline, cache none, 1 token/step): {v['tokens_per_s']} tok/s, "
                     f"NFE {v['nfe']}.")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path, paper: bool = True) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    by = {}
    for r in result["rows"]:
        by.setdefault(f"{r.get('dataset', '')} {r['setting']}".strip(), []).append(r)
    for name, rows in by.items():
        rows = sorted(rows, key=lambda r: r["budget"])
        line, = ax.plot([r["budget"] for r in rows], [r["nfe_ratio"] for r in rows], marker="o", label=name)
        if all("ceiling_nfe_ratio" in r for r in rows):
            ax.plot([r["budget"] for r in rows], [r["ceiling_nfe_ratio"] for r in rows], ls="--",
                    color=line.get_color(), alpha=0.6, label=f"{name} ceiling")
    if paper:
        xs = sorted(PAPER_NFE_REDUCTION)
        ax.fill_between(xs, [PAPER_NFE_REDUCTION[x][0] for x in xs], [PAPER_NFE_REDUCTION[x][1] for x in xs],
                        color="gray", alpha=0.25, label="paper, LLaDA-8B k1")
    ax.set_xlabel("draft budget D")
    ax.set_ylabel("NFE reduction (baseline / Spiffy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(result: dict, out_dir: Path, predict: bool, ceiling: bool) -> dict:
    """bench.json (without the token ids), bench.md, tokens.jsonl (per prompt, setting and budget: the
    baseline's and Spiffy's token ids) and the plot; each file written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench.json", "markdown": out_dir / "bench.md", "tokens": out_dir / "tokens.jsonl",
             "plot": out_dir / "nfe_vs_budget.png"}
    outputs = result.get("outputs", [])
    atomic_write_json(paths["json"], {k: v for k, v in result.items() if k != "outputs"})   # never half a file
    atomic_write_text(paths["tokens"], "".join(json.dumps(o) + "\n" for o in outputs))
    atomic_write_text(paths["markdown"], markdown_table(result, predict, ceiling))
    tmp = out_dir / ".nfe_vs_budget.tmp.png"
    plot(result, tmp)
    if tmp.exists():
        tmp.replace(paths["plot"])
    return {k: str(v) for k, v in paths.items()}


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
