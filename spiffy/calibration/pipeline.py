"""The calibration run: trace the baseline on a prompt set, count formulas, select graphs per budget
and objective, write versioned artifacts, and evaluate on held-out prompts."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import networkx as nx

from ..atomic import atomic_write_json, atomic_write_text, folder_in_place
from ..errors import ArtifactError, ConfigError
from ..sampling.loop import sampler_of
from ..sampling.schedule import block_schedule
from ..speculative.calibrated import set_folder_name, setting_key
from ..speculative.defaults import default_graph
from ..speculative.graph import ROOT, load_graph, make_graph
from .artifact import write_graph_artifact
from .counts import formula_counts, possibility_graph, possibility_to_dict
from ..backends.fingerprint import model_fingerprint
from .select import OBJECTIVES, select_nodes
from .simulate import IndexedChains, baseline_calls, simulate
from .traces import chains_of, collect_traces


@dataclass
class TraceSet:
    """Traces of one prompt set under one setting, as chains ready for replay."""
    name: str
    prompts: list
    chains: list
    results: list = field(default_factory=list)
    traces: list = field(default_factory=list)

    @property
    def baseline(self) -> int:
        return baseline_calls(self.chains)


def step_counts_for(backend, cfg, depth: int) -> Optional[list]:
    """Per-step commit counts a fixed graph uses (None for threshold decoding)."""
    if cfg.threshold is not None:
        return None
    sched = block_schedule(sampler_of(backend, cfg), cfg.block_length, cfg.steps_per_block)
    if len(set(sched)) != 1:
        raise ConfigError(f"calibration needs a uniform per-step count (this setting commits {sorted(set(sched))}); "
                          "use --steps equal to gen_length / k")
    return [sched[0]] * depth


def setting_name(backend, cfg) -> str:
    return f"{setting_key(cfg, sampler_of(backend, cfg))}_{cfg.cache}"


def encode_prompts(backend, rows: Sequence[dict], chat: bool = True) -> list:
    return [backend.encode_prompt(r["prompt"], chat) for r in rows]


def trace_set(backend, name: str, rows: Sequence[dict], cfg, max_depth: int, token_ranks: int = 4,
              chat: bool = True, progress: bool = False) -> TraceSet:
    return trace_sets(backend, [(name, rows)], cfg, max_depth, token_ranks, chat, progress)[0]


def trace_sets(backend, named: Sequence[tuple], cfg, max_depth: int, token_ranks: int = 4, chat: bool = True,
               progress: bool = False, sharding=None) -> Optional[list]:
    """Trace several (name, rows) prompt sets in one pass (under torch.distributed, one pass spread over
    the ranks: rank 0 gets every set, the other ranks None)."""
    ids = [encode_prompts(backend, rows, chat) for _, rows in named]
    got = collect_traces(backend, [p for group in ids for p in group], cfg, token_ranks, progress, sharding)
    if got is None:
        return None
    results, traces = got
    out, i = [], 0
    for (name, rows), group in zip(named, ids):
        tr = traces[i:i + len(group)]
        out.append(TraceSet(name, list(rows), chains_of(tr, backend.mask_id, max_depth), results[i:i + len(group)], tr))
        i += len(group)
    return out


def graph_from_nodes(nodes, step_counts, meta=None) -> nx.DiGraph:
    if step_counts is None:
        return make_graph(nodes, "variable", None, meta)
    depth = max((len(f) // step_counts[0] for f in nodes), default=1)
    return make_graph(nodes, "fixed", step_counts[:max(depth, 1)], meta)


def reduction(base: int, calls: int) -> float:
    return base / calls if calls else float("inf")


def evaluate_nodes(ts: TraceSet, nodes) -> dict:
    sim = simulate(ts.chains, set(nodes) | {ROOT})
    return {"calls": sim["nfe"], "baseline_calls": ts.baseline, "nfe_reduction": round(reduction(ts.baseline, sim["nfe"]), 4),
            "accepted_per_round": round(sim["accepted"] / max(sim["rounds"], 1), 4)}


def evaluate_pruned(backend, cfg, ts: TraceSet, graph, keep: int, child_weight: float = 0.5) -> dict:
    """Replay the held-out traces with ``graph`` pruned to ``keep`` nodes per round (as the decoder would)."""
    from ..speculative.config import SpeculativeConfig
    from ..speculative.replay import provider_for, replay_nfe
    from .pruning import calibrated_pruner

    pruner = calibrated_pruner(keep, child_weight)
    provider, _ = provider_for(backend, cfg, SpeculativeConfig(graph=graph, use_calibration=False))
    r = replay_nfe(ts.traces, provider, pruner)
    return {"calls": r["nfe"], "baseline_calls": ts.baseline, "nfe_reduction": round(reduction(ts.baseline, r["nfe"]), 4),
            "accepted_per_round": round(r["accepted"] / max(r["rounds"], 1), 4), "child_weight": child_weight}


def default_nodes(budget: int, step_counts) -> set:
    key = None if step_counts is None else tuple(step_counts[:budget])
    return set(default_graph(budget, key).nodes) - {ROOT}


@dataclass
class CalibrationConfig:
    """What a calibration selects: graphs for ``budgets`` by ``objective`` (every objective in
    ``compare_objectives`` is evaluated beside it), with ``search`` over formulas recorded up to
    ``token_ranks`` per position; ``prune``: (D, keep) pairs, the calibrated D graph pruned at run time
    to ``keep`` nodes per round (child-aware score), replayed on the held-out traces."""

    budgets: Sequence[int] = (3, 5, 8, 10)
    objective: str = "saved"
    search: str = "greedy"
    token_ranks: int = 4
    compare_objectives: Sequence[str] = OBJECTIVES
    prune: Sequence[tuple] = ()

    def check(self) -> "CalibrationConfig":
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; choose one of {OBJECTIVES}")
        if not self.budgets or any(b < 1 for b in self.budgets):
            raise ConfigError(f"budgets must be positive integers, got {list(self.budgets)}")
        return self


@dataclass
class CalibrationRun:
    """What :func:`calibrate` returns: the report (exactly the JSON written to report.json) and, for
    callers that go on in memory, the traced prompt sets, the chosen nodes and the per-step counts."""

    report: dict
    sets: dict            # name -> TraceSet ("calibration" and every held-out set)
    chosen: dict          # (D, objective) -> set of formulas
    step_counts: Optional[list]


def calibrate(backend, rows: Sequence[dict], cfg, cal: CalibrationConfig, out_dir=None, prompt_set: str = "custom",
              heldout: Optional[dict] = None, chat: bool = True, force: bool = False, plot: bool = False,
              progress: bool = False, sharding=None) -> Optional[CalibrationRun]:
    """Calibrate graphs (:class:`CalibrationConfig`) on the prompts ``rows``; when ``out_dir`` is given,
    write the set ``<out_dir>/<model>/<setting>_g<gen>_<cache>/`` (D<k>.json, counts.json, report.json,
    prompts.jsonl, and with ``plot`` the PNGs) as one unit (:func:`spiffy.atomic.folder_in_place`: a
    killed run leaves the old set or none, never a mix); an
    existing set is replaced only with ``force``, and that is checked before any tracing. ``heldout``:
    {name: rows} evaluated with every objective, the default graphs and the in-sample ceiling.
    ``sharding`` (:class:`spiffy.distributed.Sharding`): spread the tracing over the ranks of a
    torch.distributed job and save finished shards for ``--resume``; rank 0 selects, writes and
    returns the run, the other ranks return None."""
    cal.check()
    if not rows:
        raise ConfigError("the calibration prompt set is empty")
    t0 = time.perf_counter()
    model = backend.name
    final = None
    if out_dir is not None:
        final = Path(out_dir) / model / set_folder_name(setting_key(cfg, sampler_of(backend, cfg)), cfg.gen_length,
                                                        cfg.cache, cfg.temperature)
        _check_free(final, force)
    budgets, objective = list(cal.budgets), cal.objective
    objectives = list(dict.fromkeys([objective, *cal.compare_objectives]))
    step_counts = step_counts_for(backend, cfg, max(budgets))
    traced = trace_sets(backend, [(prompt_set, rows), *(heldout or {}).items()], cfg, max(budgets), cal.token_ranks,
                        chat, progress, sharding)
    if traced is None:   # another rank of a distributed job: rank 0 selects and writes
        return None
    calib, held_traced = traced[0], traced[1:]
    counts = formula_counts(calib.chains)
    indexed = IndexedChains(calib.chains)
    report = {"model": model, "setting": setting_name(backend, cfg), "fingerprint": model_fingerprint(backend),
              "prompt_set": prompt_set, "size": len(rows), "objective": objective, "search": cal.search,
              "token_ranks": cal.token_ranks, "budgets": budgets, "calibration_baseline_calls": calib.baseline,
              "graphs": {}, "heldout": {}}
    chosen = {}
    for D in budgets:
        for obj in objectives:
            nodes = select_nodes(counts, D, obj, indexed, step_counts, cal.search)
            chosen[(D, obj)] = nodes
            report["graphs"].setdefault(str(D), {})[obj] = {"calibration": evaluate_nodes(calib, nodes),
                                                            "nodes": sorted([list(map(list, f)) for f in nodes])}
    for ts in held_traced:
        report["heldout"][ts.name] = evaluate_heldout(backend, cfg, ts, cal, chosen, step_counts)
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    if final is not None:
        report["folder"] = f"{model}/{final.name}"
        _check_free(final, force)   # again: another run may have written it meanwhile
        with folder_in_place(final) as tmp:
            write_artifacts(report, chosen, counts, calib, step_counts, cfg, tmp, rows, sampler_of(backend, cfg))
            if plot:
                plot_set(report, tmp)
            _check_free(final, force)
    if sharding is not None:
        sharding.finished()
    return CalibrationRun(report, {"calibration": calib, **{ts.name: ts for ts in held_traced}}, chosen, step_counts)


def evaluate_heldout(backend, cfg, ts: TraceSet, cal: CalibrationConfig, chosen: dict, step_counts) -> dict:
    """A held-out set: every objective's graph, the default graph and the in-sample ceiling per budget,
    and the runtime-pruned graphs of ``cal.prune``."""
    hcounts, hidx = formula_counts(ts.chains), IndexedChains(ts.chains)
    table = {}
    for D in cal.budgets:
        row = {obj: evaluate_nodes(ts, nodes) for (d, obj), nodes in chosen.items() if d == D}
        row["default"] = evaluate_nodes(ts, default_nodes(D, step_counts))
        row["ceiling"] = evaluate_nodes(ts, select_nodes(hcounts, D, "saved", hidx, step_counts, cal.search))
        table[str(D)] = row
    out = {"size": len(ts.prompts), "baseline_calls": ts.baseline, "by_budget": table}
    if cal.prune:
        out["pruned"] = {
            f"D{D}->keep{k}": evaluate_pruned(backend, cfg, ts, graph_from_nodes(chosen[(D, cal.objective)], step_counts), k)
            for D, k in cal.prune if D in cal.budgets}
    return out


def _check_free(final: Path, force: bool):
    if final.exists() and not force:
        raise ArtifactError(f"{final} already holds a calibration set: pass --force to replace it, or choose "
                            "another --out")


def prompt_set_digest(data: bytes) -> str:
    """The ``sha`` recorded for a set's prompts file (checked when the set is re-traced)."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def prompt_set_file(folder: Path, rel: str, name: str, rows) -> dict:
    """The prompts a set was calibrated on, kept inside the set (``rel``: the set's path under the root)."""
    text = "".join(json.dumps({"id": r.get("id"), "prompt": r["prompt"]}) + "\n" for r in rows)
    atomic_write_text(folder / "prompts.jsonl", text)
    return {"name": name, "size": len(rows), "file": f"{rel}/prompts.jsonl",
            "sha": prompt_set_digest(text.encode())}


def plot_set(report: dict, folder: Path):
    from .plot import plot_graph, plot_reduction

    for D in report["budgets"]:
        plot_graph(load_graph(folder / f"D{D}.json"), folder / f"D{D}.png",
                   f"{report['model']} {report['setting']} D={D} ({report['objective']})")
    plot_reduction(report, folder / "nfe_reduction.png")


def write_artifacts(report, chosen, counts, calib, step_counts, cfg, folder: Path, rows, sampler_name: str):
    """Write a set's files into ``folder`` (the temporary folder of :func:`calibrate`); each graph carries the
    acceptance model fitted on the calibration traces (:mod:`spiffy.calibration.acceptance_fit`)."""
    from .acceptance_fit import fit_acceptance

    ps = prompt_set_file(folder, report["folder"], report["prompt_set"], rows)
    sampler = {k: v for k, v in cfg.to_dict().items() if k in ("gen_length", "block_length", "steps", "tokens_per_step",
                                                                  "threshold", "cache", "sampler", "remasking")}
    sampler["temperature_band"] = "greedy (T = 0)" if cfg.temperature == 0 else f"T = {cfg.temperature:g}"
    for D in report["budgets"]:
        nodes = chosen[(D, report["objective"])]
        g = graph_from_nodes(nodes, step_counts)
        for f in g.nodes:
            g.nodes[f]["count"] = int(counts.get(f, 0)) if f != ROOT else sum(len(bc.chains) for bc in calib.chains)
        held = {name: h["by_budget"][str(D)] for name, h in report["heldout"].items()}
        meta = {"model": report["model"], "fingerprint": report["fingerprint"], "setting": report["setting"],
                "sampler": sampler, "prompt_set": ps, "objective": report["objective"], "search": report["search"],
                "budget": D, "token_ranks": report["token_ranks"],
                "calibration": report["graphs"][str(D)][report["objective"]]["calibration"], "heldout": held}
        acceptance = fit_acceptance(calib.traces, g, cfg, sampler_name)
        if acceptance is not None:
            meta["acceptance"] = acceptance
        write_graph_artifact(g, folder / f"D{D}.json", meta)
    pg = possibility_graph(counts, calib.chains, step_counts)
    atomic_write_json(folder / "counts.json", {"artifact": "spiffy.calibration.counts", "artifact_version": 1,
                                               "model": report["model"], "fingerprint": report["fingerprint"],
                                               "setting": report["setting"], "prompt_set": ps,
                                               "possibility_graph": possibility_to_dict(pg)}, indent=None)
    atomic_write_json(folder / "report.json", report)
