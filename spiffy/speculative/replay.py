"""Baseline traces and what a draft graph can save on them.

:func:`trace_baseline` runs the baseline loop (the same steps, noise and helpers as
``generate_baseline``) and records every block's states and the draft sources of the distributions
it computed. :func:`replay_nfe` walks those traces with a graph exactly as the decoder would and
returns the NFE the decoder must reach: the decoder realises every saving its graph allows, so the
measured NFE equals this prediction (up to ties broken differently by float rounding in a batched
forward). :func:`ceiling_nfe` is the bound for ANY graph of D nodes: every round accepts D drafts
(or all the states left in the block).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


from ..sampling.baseline import generate_baseline, sampler_of
from ..sampling.config import GenerationConfig
from .walk import GraphProvider, plan_round, token_ranks_needed
from .proposer import DraftSource


@dataclass
class BlockTrace:
    states: list        # S_0 .. S_T (tuples of ids); S_0 = the block before its first step
    sources: list       # DraftSource of the distribution used at step t, t = 0 .. T-1
    schedule: list      # tokens per step, or None (threshold)


def trace_baseline(backend, prompt: list, cfg: GenerationConfig, k: int = 2):
    """Baseline decode of one prompt (``generate_baseline`` itself), recording every block's states and
    draft sources (top-``k`` tokens). Returns (GenerationResult, [BlockTrace])."""
    traces = []
    sampler = sampler_of(backend, cfg)

    def record(b, t, schedule, logits, before, out):
        if t == 0:
            traces.append(BlockTrace([tuple(before[0].tolist())], [], schedule))
        tr = traces[-1]
        tr.sources.append(DraftSource.from_logits(logits[0], k, cfg, sampler, backend.eos_id, backend.mask_id))
        tr.states.append(tuple(out.tokens[0].tolist()))

    return generate_baseline(backend, [prompt], cfg, observer=record), traces


def replay_nfe(traces, provider: GraphProvider, mask_id: int, pruner=None, cfg_doubled: bool = False) -> dict:
    """Walk the traces with the provider's graphs as the decoder does. Returns predicted nfe, rounds and
    accepted drafts."""
    calls = rounds = accepted = 0
    for tr in traces:
        calls += 1
        rnd = None
        T = len(tr.states) - 1
        for t in range(T):
            if t + 1 == T:
                break
            cur, new = tr.states[t], tr.states[t + 1]
            if new == cur:
                continue
            if rnd is not None and rnd.advance(new) is not None:
                accepted += 1
                continue
            upcoming = None if tr.schedule is None else [c for c in tr.schedule[t + 1:] if c > 0]
            graph = provider.graph_for(upcoming)
            rnd = plan_round(graph, new, tr.sources[t], mask_id, upcoming, pruner)
            calls += 1
            rounds += 1
    mult = 2 if cfg_doubled else 1
    return {"nfe": calls * mult, "rounds": rounds, "accepted": accepted}


def ceiling_nfe(traces, budget: int, cfg_doubled: bool = False) -> int:
    """Fewest calls any graph of ``budget`` nodes could need on these traces (oracle drafts)."""
    calls = 0
    for tr in traces:
        T = len(tr.states) - 1
        need = sum(1 for t in range(1, T) if tr.states[t] != tr.states[t - 1])
        calls += 1 + math.ceil(need / (budget + 1))
    return calls * (2 if cfg_doubled else 1)


def baseline_nfe(traces, cfg_doubled: bool = False) -> int:
    return sum(len(tr.states) - 1 for tr in traces) * (2 if cfg_doubled else 1)


def provider_for(backend, cfg, spec):
    """The graph provider and draft-source depth the decoder would use for ``spec``."""
    sampler = sampler_of(backend, cfg)
    provider = GraphProvider(spec, backend, cfg, sampler)
    return provider, token_ranks_needed(provider)
