"""Calibration traces: what the baseline really did, expressed as draft formulas.

For every block of every prompt the baseline is run once (``spiffy.speculative.replay.trace_baseline``)
and its states S_0 … S_T and the distributions it computed are kept. A Spiffy round can start at any
state S_r (r ≥ 1, the states whose distribution a model call must compute); its drafts are built from
the distribution that produced S_r (step r-1). The state reached d steps later, S_{r+d}, is written as
a formula in that distribution's rankings: for each position masked in S_r and filled in S_{r+d},
(rank of the position among S_r's masked positions by top-1 probability, rank of the token among the
position's tokens). ``chain[r] = [f_1, f_2, …]`` stops at the first state that cannot be written with
the recorded token ranks, and at S_{T-1} (the last state whose distribution is needed).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Optional

from ..backends.fingerprint import model_fingerprint
from ..errors import ConfigError
from ..speculative.graph import formula
from ..speculative.proposer import position_order


@dataclass
class BlockChains:
    steps: int      # T: baseline calls for this block
    chains: dict    # r -> list of formulas f_1, f_2, ... (round start r = 1 .. T-1)


def state_formula(start, target, source, order_rank: dict, mask_id: int) -> Optional[tuple]:
    """``target`` written as picks relative to ``start``; None if a token is beyond the recorded ranks."""
    tokens = source.tokens
    picks = []
    for pos, (a, b) in enumerate(zip(start, target)):
        if a == b:
            continue
        if a != mask_id:
            raise ConfigError("a later state changed a committed token: not a trace of the baseline")
        row = tokens[pos].tolist()
        if b not in row:
            return None
        picks.append((order_rank[pos], row.index(b)))
    return formula(picks)


def block_chains(trace, mask_id: int, max_depth: int) -> BlockChains:
    """All round starts of one block trace (``BlockTrace``) and the formulas of the states that follow."""
    states = trace.states
    T = len(states) - 1
    if any(states[t + 1] == states[t] for t in range(T)):
        raise ConfigError("this setting has steps that commit nothing (e.g. Dream's schedule with few steps); "
                          "calibrate a setting where every step commits at least one token")
    chains = {}
    for r in range(1, T):
        src = trace.sources[r - 1]
        order = position_order(states[r], src, mask_id)
        rank = {p: i for i, p in enumerate(order)}
        chain = []
        for d in range(1, max_depth + 1):
            if r + d > T - 1:
                break
            f = state_formula(states[r], states[r + d], src, rank, mask_id)
            if f is None:
                break
            chain.append(f)
        chains[r] = chain
    return BlockChains(T, chains)


def collect_traces(backend, prompts: list, cfg, token_ranks: int = 4, progress: bool = False, sharding=None):
    """Baseline traces for token-id prompts. Returns (results, [per-prompt list of BlockTrace]); under
    torch.distributed (``sharding``: :class:`spiffy.distributed.Sharding`) the prompts are spread over
    the ranks, rank 0 gets them all in prompt order and the other ranks get None."""
    from ..distributed import Sharding
    from ..memory import pin_mmap_threshold
    from ..speculative.replay import trace_baseline

    pin_mmap_threshold()   # many prompts x 256 steps of large temporaries: see spiffy.memory
    sharding = sharding or Sharding(save=False)
    job = {"model": model_fingerprint(backend), "config": cfg.to_dict(), "token_ranks": token_ranks,
           "prompts": hashlib.blake2b(json.dumps(prompts).encode(), digest_size=16).hexdigest()}
    got = sharding.map(prompts, lambda ids: trace_baseline(backend, ids, cfg, k=token_ranks), "traces", job,
                       "tracing" if progress else None)
    if got is None:
        return None
    return [r for r, _ in got], [t for _, t in got]


def chains_of(traces, mask_id: int, max_depth: int) -> list:
    """Flatten per-prompt block traces into a list of BlockChains."""
    return [block_chains(tr, mask_id, max_depth) for per_prompt in traces for tr in per_prompt]
