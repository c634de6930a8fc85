"""The acceptance walk and the per-round draft plan, shared by the decoder and the trace replay.

A round starts at a state without a known distribution. Its drafts are instantiated from the
distribution that produced that state (the latest one known) and verified together with it. Then
the walk: the baseline's own step, with its own keyed noise, gives the true next state; if that
state equals a child of the node the walk stands on (a draft whose distribution this pass
computed), the walk moves there and continues from that draft's distribution; otherwise the round
ends and the next one starts at the true next state. No rejection sampling is involved: every state
on the path is the baseline's, whatever the temperature.

The walk (:func:`acceptance_walk`) is tensor code that runs where the distributions are, right after the
verification forward: every step it takes is computed there, and the host reads ONE copy per round (the
path, and the summary of the distribution the next round drafts from).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import networkx as nx
import torch

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
    """One verification round of a row: the graph, the instantiated drafts and the nodes verified (in
    verification order; node index 0 of the walk is the row's real state, node ``i`` is ``nodes[i - 1]``)."""

    graph: nx.DiGraph
    inst: Instantiation
    nodes: list

    def states(self, real: tuple) -> list:
        return [real] + [self.inst.states[f] for f in self.nodes]

    def children(self) -> list:
        """[N, N] as lists: ``[u][v]`` when verified node v is a child of u in the graph (0 = the root)."""
        index = {ROOT: 0, **{f: i + 1 for i, f in enumerate(self.nodes)}}
        out = [[False] * len(index) for _ in index]
        for f, i in index.items():
            for c in self.graph.successors(f):
                if c in index:
                    out[i][index[c]] = True
        return out

    def steps_deep(self) -> int:
        """The most steps the walk can take on this round's drafts: the longest path of verified nodes
        (nodes are in an order where every parent comes first: each edge adds picks)."""
        longest = {ROOT: 0}
        for f in self.nodes:
            longest[f] = max((longest[p] + 1 for p in self.graph.predecessors(f) if p in longest), default=0)
        return max(longest.values())


MISS, HIT, SAME, DONE, OFF = 0, 1, 2, 3, -1     # what one step of the walk did (OFF: not on the row's path)


def acceptance_walk(step_at, states: torch.Tensor, children: torch.Tensor, mask_id: int, iters: int,
                    early_exit: bool = False):
    """The walk of one round for R rows, as tensor operations only (nothing is read back to the host unless
    ``early_exit``, which stops once no row's path goes on: CPU tensors only).

    ``states`` [R, N, n]: node 0 is the row's real state, then its verified drafts (pad with copies of node 0:
    they are nobody's child); ``children`` [R, N, N] bool; ``step_at(k, at)`` -> [R, n]: the baseline's step
    k of the round, taken from the distribution of node ``at`` [R] of each row. Step k is on a row's path
    while every earlier step landed on a verified child (HIT) or committed nothing (SAME, the same
    distribution again); the path ends at a MISS (a state no draft holds: the next round's) or DONE (no
    mask left). Returns path [R, I, n] (the state after each step), at [R, I + 1] (the node each step was
    taken from, then the node after the last) and code [R, I] (MISS/HIT/SAME/DONE, OFF after the path's
    end); I = ``iters``, or fewer with ``early_exit``."""
    R = states.shape[0]
    rows = torch.arange(R, device=states.device)
    at = torch.zeros(R, dtype=torch.long, device=states.device)
    live = torch.ones(R, dtype=torch.bool, device=states.device)
    paths, ats, codes = [], [], []
    for k in range(iters):
        nxt = step_at(k, at)
        same = (nxt == states[rows, at]).all(-1)
        match = (states == nxt[:, None]).all(-1) & children[rows, at]
        hit = match.any(-1) & ~same
        done = ~(nxt == mask_id).any(-1)
        code = torch.where(done, DONE, torch.where(same, SAME, torch.where(hit, HIT, MISS)))
        paths.append(nxt)
        ats.append(at)
        codes.append(torch.where(live, code, OFF))
        at = torch.where(hit & live, match.to(torch.uint8).argmax(-1), at)   # argmax: the first matching child
        live = live & (hit | same) & ~done
        if early_exit and not live.numpy().any():    # a host tensor's view: no copy, no wait
            break
    ats.append(at)
    return torch.stack(paths, 1), torch.stack(ats, 1), torch.stack(codes, 1)


def path_steps(states, rows, at, code) -> list:
    """One row's walk, read back, as the steps on its path: (state as a tuple, the state on the device, its code,
    the node the walk stands on after it). ``states`` [I, n], ``at`` [I + 1] and ``code`` [I] on the host;
    ``rows`` [I, n] the same states on the device."""
    return [(tuple(states[k]), rows[k], int(code[k]), int(at[k + 1])) for k in range(len(code)) if code[k] != OFF]


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
