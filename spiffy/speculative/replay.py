"""Baseline traces, and what Spiffy would do on them: the decode loop itself, run over a trace.

:func:`trace_baseline` runs the baseline and records, for every block, its states and the draft
sources of the distributions it computed. :func:`replay_nfe` runs the one decode loop
(:func:`spiffy.sampling.loop.decode_blocks`) with Spiffy's own source (proposer, acceptance walk and
statistics of :mod:`.decoder`) over a trace instead of a model: the walk's steps are the recorded
states, the scorer hands out recorded draft sources and counts the calls. The decoder realises every
saving its graph allows, so its measured NFE equals this prediction (the tests check it).
:func:`ceiling_nfe` is the bound for ANY graph of D nodes: every round accepts D drafts (or all the
states left in the block).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..sampling.baseline import generate_baseline
from ..sampling.config import GenerationConfig
from ..sampling.loop import Canvas, decode_blocks, sampler_of
from .proposer import DraftSource
from .stats import SpeculativeStats
from .walk import GraphProvider, acceptance_walk, path_steps, token_ranks_needed


@dataclass
class BlockTrace:
    states: list        # S_0 .. S_T (tuples of ids); S_0 = the block before its first step
    sources: list       # DraftSource of the distribution used at step t, t = 0 .. T-1
    schedule: list      # tokens per step, or None (threshold)


@dataclass
class Trace:
    """One prompt's baseline decode: its blocks, the config and the token ids the loop's tests read."""

    blocks: list
    cfg: GenerationConfig
    mask_id: int
    eos_id: Optional[int] = None
    eot_id: Optional[int] = None

    def __iter__(self):
        return iter(self.blocks)

    def __len__(self):
        return len(self.blocks)


def trace_baseline(backend, prompt: list, cfg: GenerationConfig, k: int = 2):
    """Baseline decode of one prompt (``generate_baseline`` itself), recording every block's states and
    draft sources (top-``k`` tokens). Returns (GenerationResult, Trace)."""
    blocks = []
    sampler = sampler_of(backend, cfg)

    def record(b, t, schedule, logits, before, out):
        if t == 0:
            blocks.append(BlockTrace([tuple(before[0].tolist())], [], schedule))
        tr = blocks[-1]
        tr.sources.append(DraftSource.from_logits(logits[0], k, cfg, sampler, backend.eos_id, backend.mask_id))
        tr.states.append(tuple(out.tokens[0].tolist()))

    res = generate_baseline(backend, [prompt], cfg, observer=record)
    return res, Trace(blocks, cfg, backend.mask_id, backend.eos_id, backend.eot_id)


class TraceScorer:
    """The scorer of a replay: the walk's steps are the states the baseline recorded and its draft sources
    the recorded ones; counts the calls."""

    def __init__(self, trace: Trace):
        self.trace, self.calls = trace, 0

    def first(self, b: int, block: torch.Tensor, iters: int) -> list:
        return self.walk(b, 0, [(0, [tuple(block[0].tolist())], [[False]])], iters)

    def walk(self, b: int, t: int, requests: list, iters: int) -> list:
        from .decoder import RoundWalk

        self.calls += 1
        bt = self.trace.blocks[b]
        ((_, states, children),) = requests
        last = len(bt.states) - 1
        path, at, code = acceptance_walk(lambda k, _: torch.tensor([bt.states[min(t + k + 1, last)]]),
                                         torch.tensor([states]), torch.tensor([children]), self.trace.mask_id,
                                         iters, early_exit=True)
        steps = path_steps(path[0].tolist(), path[0], at[0].tolist(), code[0].tolist())
        return [RoundWalk(steps, bt.sources[t + len(steps) - 1])]


def replay_trace(trace: Trace, provider: GraphProvider, pruner=None, stats: Optional[SpeculativeStats] = None) -> int:
    """Run the decode loop with Spiffy's source over one trace; returns the model calls (NFE)."""
    from .decoder import SpeculativeSource

    cfg = trace.cfg
    x = torch.tensor([list(trace.blocks[0].states[0]) * cfg.num_blocks])
    canvas = Canvas(x, 0, cfg, trace.mask_id, trace.eos_id, trace.eot_id)
    scorer = TraceScorer(trace)
    schedule = trace.blocks[0].schedule
    source = SpeculativeSource(scorer, provider, pruner, trace.mask_id, stats or SpeculativeStats(), 1, schedule)
    steps = decode_blocks(canvas, source, lambda planned, *_: planned.outcome(), schedule)
    if steps != [len(bt.states) - 1 for bt in trace.blocks]:
        raise ValueError("the replay did not follow the trace (a trace of another config?)")
    return scorer.calls * (2 if cfg.cfg_scale > 0 else 1)


def replay_nfe(traces, provider: GraphProvider, pruner=None) -> dict:
    """Replay every trace with the provider's graphs. Returns predicted nfe, rounds and accepted drafts."""
    stats = SpeculativeStats()
    nfe = sum(replay_trace(tr, provider, pruner, stats) for tr in traces)
    return {"nfe": nfe, "rounds": stats.rounds, "accepted": stats.accepted}


def ceiling_nfe(trace: Trace, budget: int) -> int:
    """Fewest calls any graph of ``budget`` nodes could need on a trace (oracle drafts)."""
    calls = 0
    for bt in trace.blocks:
        T = len(bt.states) - 1
        need = sum(1 for t in range(1, T) if bt.states[t] != bt.states[t - 1])
        calls += 1 + math.ceil(need / (budget + 1))
    return calls * (2 if trace.cfg.cfg_scale > 0 else 1)


def provider_for(backend, cfg, spec):
    """The graph provider and draft-source depth the decoder would use for ``spec``."""
    provider = GraphProvider(spec, backend, cfg, sampler_of(backend, cfg))
    return provider, token_ranks_needed(provider)
