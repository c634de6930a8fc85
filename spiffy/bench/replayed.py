"""Spiffy on a model whose own acceptance means nothing (random weights at 8B shapes), with a real model's
acceptance: every call is made for real (the block's full forward, each round's verification of the drafts the
graph instantiates, the acceptance walk on the device and its one copy back), but the walk's outcome, and so the
drafts of the next round, are the ones a recorded baseline trace of a real model gives (:mod:`spiffy.speculative.
replay`). The calls, their shapes and the host work are Spiffy's at that model's acceptance; the tokens are the
trace's. Measured against the baseline sampler on the same random model (a fixed schedule takes the same steps
whatever the logits), this is the wall-clock ratio the cost-model projection estimates, timed instead.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from ..devices import to_device
from ..sampling.loop import StepRule, decode_blocks
from ..sampling.session import DecodeSession, _sync
from ..speculative.decoder import ModelScorer, RoundWalk, SpeculativeSource
from ..speculative.replay import Trace, TraceScorer
from ..speculative.stats import SpeculativeStats
from ..speculative.walk import token_ranks_needed


def remap(trace: Trace, mask_id: int) -> Trace:
    """The trace with its mask token written as ``mask_id`` (another model's)."""
    def fix(state):
        return tuple(mask_id if t == trace.mask_id else t for t in state)

    blocks = [dataclasses.replace(bt, states=[fix(s) for s in bt.states]) for bt in trace.blocks]
    return dataclasses.replace(trace, blocks=blocks, mask_id=mask_id)


class ReplayedScorer(ModelScorer):
    """The model's calls and walk (their cost), the trace's outcome (its acceptance)."""

    def __init__(self, session, spec, step, k, trace: Trace):
        super().__init__(session, spec, step, k)
        self.trace = TraceScorer(trace)

    def _device(self, walks: list) -> list:
        dev = self.session.x.device
        return [RoundWalk([(s, to_device(row, dev), c, n) for s, row, c, n in w.steps], w.source) for w in walks]

    def first(self, b, block, iters):
        super().first(b, block, iters)
        return self._device(self.trace.first(b, torch.tensor([self.trace.trace.blocks[b].states[0]]), iters))

    def walk(self, b, t, requests, iters):
        super().walk(b, t, requests, iters)
        return self._device(self.trace.walk(b, t, requests, iters))


@torch.no_grad()
def replayed_decode(backend, prompt: list, trace: Trace, provider, spec) -> dict:
    """Decode ``prompt`` on ``backend`` with Spiffy's calls, following ``trace`` (one prompt's baseline trace
    of another model, same generation config) with ``provider``'s graphs (e.g. the traced model's calibrated
    ones). Returns seconds, NFE and rounds; the NFE is the trace's replayed NFE by construction."""
    trace = remap(trace, backend.mask_id)
    cfg = trace.cfg
    t0 = time.perf_counter()
    session = DecodeSession(backend, [prompt], cfg)
    step = StepRule.of(backend, cfg)
    stats = SpeculativeStats(verify=spec.verify, budget=provider.budget)
    scorer = ReplayedScorer(session, spec, step, token_ranks_needed(provider), trace)
    source = SpeculativeSource(scorer, provider, spec.pruner(), backend.mask_id, stats, 1, step.schedule())
    decode_blocks(session, source, step, step.schedule())
    _sync(backend.device)
    return {"wall_s": time.perf_counter() - t0, "nfe": session.nfe, "rounds": stats.rounds,
            "accepted": stats.accepted, "replayed_nfe": scorer.trace.calls}
