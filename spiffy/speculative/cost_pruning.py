"""Cost-aware runtime pruning: per round, verify only the drafts whose expected saving pays for their cost.

Each draft the walk accepts saves one model call, and each draft verified makes the round's call wider. On a
device where a wider call costs more (a compiled forward, or an eager one past its launch-bound floor), the
best number of drafts depends on the round: many when the distribution is confident, few when it is not.
Given ``call_s(n)``, the seconds of a call that evaluates n block states (the real one and n - 1 drafts; a
cost table's curve, :meth:`spiffy.costs.CostTable.call_s`), this pruner

1. estimates each node's chance to be accepted: its calibrated frequency (the node's ``count`` over the
   root's, i.e. over the rounds of the calibration traces; 1 for a graph without counts) times the
   probability of its picked tokens under the round's distribution, times ``scale``, capped at 1;
2. orders the nodes best-first from the root (every node after a parent of it, as :class:`Pruner` does);
3. keeps the prefix of k nodes that maximises the expected steps per second of the round,
   ``(1 + sum of the k estimates) / call_s(1 + k)`` (k = 0: the baseline's own step, one state).

That estimate is a ranking heuristic with one free constant: ``scale`` = 2 was chosen on the calibration
prompts (GSM8K-train and MBPP-train traces of the reference dLLM, replayed against the H100 LLaDA-8B table),
never on the held-out sets.

When the graph carries a fitted acceptance model (``meta["acceptance"]``, :mod:`spiffy.speculative.acceptance`,
written by `spiffy calibrate`), its probability, calibrated on the calibration traces, replaces step 1's
estimate and has no free constant.

Pruning never changes the output: the walk follows verified drafts only, and a round without drafts is the
baseline's step. What it changes is the width of each call, hence wall-clock.
"""
from __future__ import annotations

import math
from typing import Callable

import networkx as nx

from .acceptance import acceptance_model, node_features
from .graph import node_frequency
from .proposer import Instantiation, best_first


class CostAwarePruner:
    def __init__(self, call_s: Callable[[int], float], scale: float = 2.0, name: str = "cost"):
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.call_s, self.scale, self.name = call_s, scale, name
        self._cost = {}

    def cost(self, states: int) -> float:
        c = self._cost.get(states)
        if c is None:
            c = self._cost[states] = float(self.call_s(states))
        return c

    def estimate(self, graph: nx.DiGraph, node, inst: Instantiation) -> float:
        return min(1.0, self.scale * node_frequency(graph, node) * math.prod(inst.pick_probs[node]))

    def __call__(self, graph: nx.DiGraph, inst: Instantiation) -> set:
        model = acceptance_model(graph)
        if model is None:
            scores = {f: self.estimate(graph, f, inst) for f in inst.states}
        else:
            scores = {f: model.prob(node_features(graph, f, inst)) for f in inst.states}
        order = best_first(graph, scores)
        best, keep, expected = 1.0 / self.cost(1), 0, 1.0
        for k, (_, p) in enumerate(order, 1):
            expected += p
            rate = expected / self.cost(1 + k)
            if rate > best:
                best, keep = rate, k
        return {f for f, _ in order[:keep]}

    def __repr__(self) -> str:
        return f"CostAwarePruner({self.name}, scale={self.scale:g})"


def cost_pruner(table: str, scale: float = 2.0) -> CostAwarePruner:
    """A cost-aware pruner priced by a cost table (a bundled name, e.g. ``h100-llada8b-bf16``, or a JSON file):
    a round of n block states is priced as one call of n blocks over a cached context."""
    from ..costs import CostTable

    t = CostTable.load(table)
    return CostAwarePruner(lambda n: t.call_s(n * t.block_length, 1), scale, t.name)
