"""Choosing a draft graph of D nodes from counted formulas.

A chosen set must be connected to the root: every node needs a parent (one legal step before it) in
the set or the root itself, since the walk can only reach a node through an accepted parent.

Objectives (higher is better):
- ``frequency`` (degree-0): the sum of the chosen nodes' counts.
- ``degree1`` (the paper's choice): the sum over chosen nodes of (own count + counts of its parents
  in the chosen graph; the root, whose "count" is every round, is left out).
- ``saved``: the model calls the walk saves when replayed on the traces (baseline calls − calls with
  the graph). This is the quantity that matters.

Search: ``greedy`` adds, one at a time, the connectable candidate with the best marginal gain;
for ``saved`` a local search then swaps a node for a candidate while that strictly improves. ``exact``
enumerates every connected set of D nodes from the candidate pool (each set once) and is optimal for
every objective within the pool; it is for small pools and budgets.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Optional, Sequence

from ..errors import ConfigError
from ..speculative.graph import ROOT
from .counts import step_parents
from .simulate import IndexedChains

OBJECTIVES = ("frequency", "degree1", "saved")


class Candidates:
    """The candidate pool with parent/child relations restricted to it (root = the empty formula)."""

    def __init__(self, counts: Counter, step_counts: Optional[Sequence[int]], pool: int):
        self.count = dict(counts)
        ranked = sorted(counts, key=lambda f: (-counts[f], len(f), f))[:pool]
        self.nodes = ranked
        inpool = set(ranked) | {ROOT}
        self.parents = {f: [p for p in step_parents(f, step_counts) if p in inpool] for f in ranked}
        self.children = {f: [] for f in ranked}
        self.children[ROOT] = []
        for f in ranked:
            for p in self.parents[f]:
                self.children[p].append(f)

    def connectable(self, f, chosen: set) -> bool:
        return any(p == ROOT or p in chosen for p in self.parents[f])

    def connected(self, chosen: set) -> bool:
        return all(self.connectable(f, chosen) for f in chosen)


def objective_fn(name: str, cand: Candidates, chains: Optional[IndexedChains]) -> Callable[[set], float]:
    c = cand.count
    if name == "frequency":
        return lambda S: sum(c[f] for f in S)
    if name == "degree1":
        return lambda S: sum(c[f] + sum(c[p] for p in cand.parents[f] if p != ROOT and p in S) for f in S)
    if name == "saved":
        if chains is None:
            raise ConfigError("the 'saved' objective needs the traces (chains) to replay")
        base = chains.calls(set())
        return lambda S: base - chains.calls({chains.ids[f] for f in S if f in chains.ids})
    raise ConfigError(f"unknown objective {name!r}; choose one of {OBJECTIVES}")


def greedy(cand: Candidates, budget: int, score: Callable[[set], float]) -> set:
    chosen: set = set()
    current = score(chosen)
    while len(chosen) < budget:
        options = [f for f in cand.nodes if f not in chosen and cand.connectable(f, chosen)]
        if not options:
            break
        gains = [(score(chosen | {f}) - current, cand.count[f], f) for f in options]
        best = max(gains, key=lambda g: (g[0], g[1], tuple(-x for x in sum(g[2], ()))))
        chosen.add(best[2])
        current += best[0]
    return chosen


def local_search(cand: Candidates, chosen: set, score: Callable[[set], float], max_passes: int = 20) -> set:
    """Swap one node for one candidate while the score strictly improves and the set stays connected."""
    best = score(chosen)
    for _ in range(max_passes):
        improved = False
        for out in sorted(chosen, key=lambda f: (cand.count[f], f)):
            rest = chosen - {out}
            if not cand.connected(rest):
                continue
            for f in cand.nodes:
                if f in chosen or not cand.connectable(f, rest):
                    continue
                trial = rest | {f}
                if not cand.connected(trial):
                    continue
                s = score(trial)
                if s > best:
                    chosen, best, improved = trial, s, True
                    break
            if improved:
                break
        if not improved:
            return chosen
    return chosen


def connected_sets(cand: Candidates, budget: int):
    """Every connected set of ``budget`` pool nodes, each exactly once (extension-set enumeration)."""

    def grow(chosen: list, frontier: list, excluded: set):
        if len(chosen) == budget:
            yield set(chosen)
            return
        for i, v in enumerate(frontier):
            taken = set(chosen) | {v}
            seen = set(frontier) | excluded | taken
            ext = [w for w in cand.children.get(v, []) if w not in seen]
            yield from grow(chosen + [v], frontier[i + 1:] + ext, excluded | set(frontier[:i]))

    yield from grow([], list(cand.children[ROOT]), set())


def exact(cand: Candidates, budget: int, score: Callable[[set], float], limit: int = 2_000_000) -> set:
    best, best_s, n = set(), float("-inf"), 0
    for S in connected_sets(cand, budget):
        n += 1
        if n > limit:
            raise ConfigError(f"exact search over more than {limit} graphs: use a smaller pool or greedy search")
        s = score(S)
        if s > best_s or (s == best_s and sorted(S) < sorted(best)):
            best, best_s = S, s
    return best


def select_nodes(counts: Counter, budget: int, objective: str = "saved", chains: Optional[IndexedChains] = None,
                 step_counts: Optional[Sequence[int]] = None, search: str = "greedy", pool: int = 64) -> set:
    """The chosen draft nodes (formulas, root excluded)."""
    if budget < 0:
        raise ConfigError(f"budget must be >= 0, got {budget}")
    cand = Candidates(counts, step_counts, max(pool, budget))
    score = objective_fn(objective, cand, chains)
    if search == "exact":
        return exact(cand, budget, score)
    if search != "greedy":
        raise ConfigError(f"search must be 'greedy' or 'exact', got {search!r}")
    chosen = greedy(cand, budget, score)
    if objective == "saved":
        chosen = local_search(cand, chosen, score)
    return chosen
