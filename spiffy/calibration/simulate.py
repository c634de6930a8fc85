"""The fast index of the replay, for graph search: calibration chains with integer formula ids.

A round at S_r verifies the graph's drafts; the walk accepts f_1, f_2, … while they are nodes of the
graph (each f_{d+1} extends f_d by one step, so it is a child of f_d whenever both are nodes), then the
next round starts at the first state not accepted. Every block costs one call for its first step,
whose distribution no draft can provide. This is what the decode loop does over a trace
(``spiffy.speculative.replay.replay_nfe``; the tests check that both agree), reduced to set lookups
so that search can afford millions of evaluations.
"""
from __future__ import annotations


class IndexedChains:
    """Chains with formulas replaced by integer ids."""

    def __init__(self, block_chains: list):
        self.ids = {}
        self.blocks = []
        for bc in block_chains:
            self.blocks.append((bc.steps, [[self._id(f) for f in bc.chains[r]] for r in range(1, bc.steps)]))

    def _id(self, f):
        if f not in self.ids:
            self.ids[f] = len(self.ids)
        return self.ids[f]

    def replay(self, node_ids: set) -> tuple:
        """(calls, rounds, accepted drafts) with a graph whose nodes have these ids."""
        calls = rounds = accepted = 0
        for steps, chains in self.blocks:
            calls += 1
            r = 1
            while r <= steps - 1:
                rounds += 1
                m = 0
                for f in chains[r - 1]:
                    if f not in node_ids:
                        break
                    m += 1
                accepted += m
                r += m + 1
        return calls + rounds, rounds, accepted

    def calls(self, node_ids: set) -> int:
        return self.replay(node_ids)[0]


def simulate(block_chains: list, nodes) -> dict:
    """``nodes``: a set of formulas (the root may be in it or not). Returns nfe, rounds, accepted."""
    index = IndexedChains(block_chains)
    calls, rounds, accepted = index.replay({index.ids[f] for f in nodes if f in index.ids})
    return {"nfe": calls, "rounds": rounds, "accepted": accepted}


def baseline_calls(block_chains: list) -> int:
    return sum(bc.steps for bc in block_chains)
