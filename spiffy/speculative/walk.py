"""The acceptance walk and the per-round draft plan, shared by the decoder and the trace replay.

A round starts at a state without a known distribution. Its drafts are instantiated from the
distribution that produced that state (the latest one known) and verified together with it. Then
the walk: the baseline's own step, with its own keyed noise, gives the true next state; if that
state equals a child of the node the walk stands on (a draft whose distribution this pass
computed), the walk moves there and continues from that draft's distribution; otherwise the round
ends and the next one starts at the true next state. No rejection sampling is involved: every state
on the path is the baseline's, whatever the temperature.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import networkx as nx

from ..errors import ConfigError
from .calibrated import calibrated_graph_for, check_meta, load_graph_artifact
from .defaults import default_graph
from ..sampling.schedule import block_schedule
from .graph import ROOT, budget_of, counts_of, is_fixed, load_graph
from .proposer import DraftSource, Instantiation, Pruner, instantiate


class GraphProvider:
    """Chooses the draft graph for each round: the user's graph, else a calibrated graph for the model
    and setting, else the default graph for the budget (built for the upcoming per-step counts)."""

    def __init__(self, spec, backend, cfg, sampler: str):
        self.variable = cfg.threshold is not None
        self.fixed_graph: Optional[nx.DiGraph] = None
        self.budget = spec.budget
        self.source = "default"
        g = spec.graph
        if g is None and spec.use_calibration:
            path = calibrated_graph_for(backend, cfg, sampler, spec.budget, spec.calibration_dir)
            if path is not None:
                # schema, invariants, model fingerprint and setting are checked; a mismatch is an error
                # unless spec.allow_mismatch
                g = load_graph_artifact(path, backend, None, spec.allow_mismatch)
                self.source = f"calibrated:{path}"
        elif g is not None:
            self.source = "user" if isinstance(g, nx.DiGraph) else f"file:{g}"
            if not isinstance(g, nx.DiGraph):
                path, g = g, load_graph(g)
                meta = g.graph.get("meta") or {}
                if meta.get("artifact") is not None:   # a calibrated graph: the same checks as a found one
                    check_meta(meta, str(path), backend, None, spec.allow_mismatch)
        if g is not None:
            if is_fixed(g) == self.variable:
                want = "variable (threshold decoding)" if self.variable else "fixed (a set number of tokens per step)"
                raise ConfigError(f"draft graph mode {g.graph.get('mode')!r} does not fit this setting, which needs a "
                                  f"{want} graph")
            if is_fixed(g):
                sched = {c for c in block_schedule(sampler, cfg.block_length, cfg.steps_per_block) if c > 0}
                first = counts_of(g)[:1]
                if first and first[0] not in sched:
                    raise ConfigError(f"draft graph was built for steps committing {counts_of(g)} tokens, but this "
                                      f"setting's steps commit {sorted(sched)}: no draft could ever match")
            self.fixed_graph = g
            self.budget = budget_of(g)
        self._cache = {}

    def graph_for(self, upcoming: Optional[Sequence[int]]) -> nx.DiGraph:
        if self.fixed_graph is not None:
            return self.fixed_graph
        key = None if upcoming is None else tuple(upcoming[: self.budget])
        if key not in self._cache:
            self._cache[key] = default_graph(self.budget, key)
        return self._cache[key]


@dataclass
class Round:
    """One verification round: the graph, the instantiated drafts and where the walk stands."""

    graph: nx.DiGraph
    inst: Instantiation
    nodes: list                                  # verified draft nodes, in verification order
    node: tuple = ROOT
    accepted: int = 0
    logits: dict = field(default_factory=dict)   # node -> logits (decoder only)

    def advance(self, state: tuple) -> Optional[tuple]:
        """Move to the child of the current node whose state is ``state``; None when no draft matches."""
        for child in self.graph.successors(self.node):
            if child in self.inst.states and self.inst.states[child] == state:
                self.node = child
                self.accepted += 1
                return child
        return None


def plan_round(graph: nx.DiGraph, block: Sequence[int], source: DraftSource, mask_id: int,
               upcoming: Optional[Sequence[int]], pruner: Optional[Pruner]) -> Round:
    inst = instantiate(graph, block, source, mask_id, upcoming)
    if pruner is not None:
        keep = pruner(graph, inst)
        inst.states = {f: s for f, s in inst.states.items() if f in keep}
        inst.pick_probs = {f: p for f, p in inst.pick_probs.items() if f in keep}
    nodes = sorted(inst.states, key=lambda f: (len(f), f))
    return Round(graph, inst, nodes)


def token_ranks_needed(provider: GraphProvider) -> int:
    from .graph import max_token_rank

    if provider.fixed_graph is not None:
        return max_token_rank(provider.fixed_graph) + 1
    return 2  # default graphs use token ranks 0 and 1


class Timer:
    def __init__(self):
        self.t = 0.0

    def __enter__(self):
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.t += time.perf_counter() - self._t0
