"""Spiffy's decoder: the one block loop (:mod:`spiffy.sampling.loop`) with a source of distributions
that verifies draft states with every model call.

Per block: the block's first step is the baseline's full forward (it builds the cache and carries no
drafts). After a step, each row either stands on a draft its previous call verified (the step landed
on it: its distribution is already known, no call), or on a state that committed nothing (same state,
same distribution, no call), or it opens a round: drafts are instantiated from the distribution that
produced its state (proposer), and ONE forward evaluates the real state of every such row with all
their drafts (scorer: :mod:`.verifier`). The walk (:mod:`.walk`) then follows the baseline's own steps
with the baseline's keyed noise for as long as they land on verified drafts: on the device, right after the
forward, so that the host reads one copy per round and the loop takes the walk's steps without a call. Each row of a batch gets
exactly the distributions the batched baseline computes for it, so outputs are the baseline's.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ..result import GenerationResult
from ..sampling.baseline import finish
from ..sampling.config import GenerationConfig
from ..errors import ConfigError
from ..devices import to_device
from ..sampling.loop import Planned, StepRule, decode_blocks, sampler_of
from ..sampling.session import DecodeSession
from .config import NearLosslessWarning, SpeculativeConfig
from .proposer import DraftSource, source_summary
from .stats import SpeculativeStats
from .verifier import packed_is_exact, verify
from .walk import (HIT, OFF, SAME, GraphProvider, Timer, acceptance_walk, path_steps, plan_round,
                   token_ranks_needed)

NEAR_LOSSLESS_MSG = ("packed verification with cache={cache!r} is only NEAR-lossless on a bidirectional model: "
                     "drafts attend to positions computed with the current block, so outputs may differ from the "
                     "baseline. Use cache='dual' for exact packed verification, or verify='batch' (exact everywhere).")


class ModelScorer:
    """Distributions from the model: the block's first forward, and verification forwards that evaluate
    several rows' real states and drafts at once; each followed by the acceptance walk on the device and
    ONE copy back to the host."""

    def __init__(self, session: DecodeSession, spec: SpeculativeConfig, step: StepRule, k: int):
        self.session, self.spec, self.step, self.k = session, spec, step, k
        self.early_exit = session.x.device.type == "cpu"     # stopping the walk early reads a flag: free on a CPU
        self.t_walk = Timer()     # the walks and their copies (on a GPU the copy also waits for the forward)

    def first(self, b: int, block: torch.Tensor, iters: int) -> list:
        B = block.shape[0]
        children = torch.zeros(B, 1, 1, dtype=torch.bool, device=block.device)
        return self._walk(b, 0, block[:, None], children, self.session.begin_block(b), [1] * B, iters)

    def walk(self, b: int, t: int, requests: list, iters: int) -> list:
        """requests: (row, states [real state, drafts...] as tuples, children [N][N]) -> per request a RoundWalk.
        A compiled step (static shapes) walks every row of the session, so that it always sees the baseline's
        shape [B, n, V]; rows without a request stand on their current block, and their walks are dropped."""
        s = self.session
        every = self.step.compiled is not None and len(requests) < s.B
        outs = self.score(b, [(row, st) for row, st, _ in requests], every_row=every)
        N = max(len(o) for o in outs)
        dev = s.x.device
        given = {row: j for j, (row, _, _) in enumerate(requests)}
        states = to_device(torch.tensor([st + [st[0]] * (N - len(st)) for _, st, _ in requests]), dev)
        order = range(s.B) if every else given
        if every:                                # other rows stand on their current block, on the device
            lo, hi = s.span(b)
            states = torch.stack([states[given[row]] if row in given else s.x[row, lo:hi].expand(N, -1)
                                  for row in order])

        def padded(ch):
            return [r + [False] * (N - len(r)) for r in ch] + [[False] * N] * (N - len(ch))

        children = [padded(requests[given[row]][2] if row in given else [[False]]) for row in order]
        flat = outs[0] if len(outs) == 1 else torch.cat(outs)
        walks = self._walk(b, t, states, to_device(torch.tensor(children), dev), flat, [len(o) for o in outs], iters)
        return [walks[row] for row in given] if every else walks

    def score(self, b: int, requests: list, counted: bool = True, every_row: bool = False) -> list:
        """requests: (row, [real state, draft states...] as tuples) -> per request, logits [N_j, n, V] (static
        shapes with ``every_row``: per row of the session, see :func:`~spiffy.sampling.layout.static_forward`)."""
        return list(verify(self.session, b, requests, self.spec.verify, counted=counted, every_row=every_row))

    def _walk(self, b, t, states, children, flat, counts, iters) -> list:
        R, n = states.shape[0], states.shape[-1]
        offs = to_device(torch.tensor([sum(counts[:j]) for j in range(R)]), flat.device)
        with self.t_walk:
            path, out = accept_on_device(self.step, flat, offs, states, children, b, t, iters, self.k,
                                         self.early_exit)
            host = out.cpu().numpy()          # the round's ONE device -> host copy
        I = path.shape[1]
        walks = []
        for r in range(R):
            h = host[r]
            ph = h[:I * n].reshape(I, n).astype(np.int64).tolist()
            ah, ch = h[I * n:I * n + I + 1].astype(np.int64), h[I * n + I + 1:I * n + 2 * I + 1].astype(np.int64)
            steps = path_steps(ph, path[r], ah, ch)
            walks.append(RoundWalk(steps, DraftSource.from_summary(h[I * n + 2 * I + 1:].reshape(n, -1)),
                                   lambda node, r=r: flat[offs[r] + node]))
        return walks


def accept_on_device(step: StepRule, flat: torch.Tensor, offs: torch.Tensor, states: torch.Tensor,
                     children: torch.Tensor, b: int, t: int, iters: int, k: int, early_exit: bool = False):
    """A round's acceptance on the device, as tensor code only (``torch.compile(fullgraph=True)`` traces it):
    the walk (:func:`~.walk.acceptance_walk`) with the baseline's step rule from step ``t`` of block ``b``,
    then the draft source of the distribution the path's last step was taken from. ``flat`` [sum N_j, n, V]:
    the rows' logits, row r's nodes from ``offs[r]``. Returns [R, I*n + 2I + 1 + 2nK] float64: the path, the
    nodes, the codes and the source summary of each row, so that the host reads it in one copy; and the path
    [R, I, n] itself (the states the loop commits, left on the device)."""
    R = states.shape[0]
    rows = torch.arange(R, device=flat.device)
    sched = step.schedule()

    def step_at(i, at):
        n_commit = None if sched is None else [sched[t + i]] * R
        return step(flat[offs + at], states[rows, at], b, t + i, n_commit).tokens

    path, at, code = acceptance_walk(step_at, states, children, step.mask_id, iters, early_exit)
    last = at[rows, (code != OFF).sum(1) - 1]          # the node the path's last step was taken from
    src = source_summary(flat[offs + last], k, step.cfg, step.sampler, step.eos_id, step.mask_id)
    return path, torch.cat([path.flatten(1).to(torch.float64), at.to(torch.float64), code.to(torch.float64),
                            src.flatten(1)], 1)


@dataclass
class RoundWalk:
    """What a round's walk computed for one row: its steps (state, the state on the device, MISS/HIT/SAME/DONE,
    the node the walk stands on after it), the source of the distribution its last step was taken from (the
    next round drafts from it) and, for the model's walks, each node's logits."""

    steps: list
    source: DraftSource
    logits: Optional[Callable] = None


class SpeculativeSource:
    """Proposer + scorer + acceptance for every row of a batch (the decoder's and the replay's). Each round's
    walk computes every step until a state no draft holds; the loop then takes those steps without a call."""

    def __init__(self, scorer, provider: GraphProvider, pruner, mask_id: int, stats: SpeculativeStats, B: int,
                 schedule: Optional[list], check=None):
        self.scorer, self.provider, self.pruner, self.mask_id = scorer, provider, pruner, mask_id
        self.stats, self.B, self.schedule, self.check = stats, B, schedule, check
        self.plans = [[] for _ in range(B)]   # per row: the steps its last walk computed, not yet taken
        self.now = [None] * B                 # per row: (state as a tuple, on the device) after the last step taken
        self.sources = [None] * B             # per row: the draft source its next round drafts from
        self.t_draft, self.t_book = Timer(), Timer()

    def iters(self, t: int, depth: int) -> int:
        """Steps a round's walk computes: up to ``depth + 1`` steps that commit (and the empty ones between)."""
        if self.schedule is None:
            return depth + 1
        k = n = 0
        for c in self.schedule[t:]:
            k += 1
            n += c > 0
            if n == depth + 1:
                break
        return k

    def first(self, b: int, block: torch.Tensor):
        self.stats.block_starts += 1
        self.stats.steps += 1
        walks = self.scorer.first(b, block, self.iters(0, 0))
        with self.t_book:
            for i, w in enumerate(walks):
                self._take(b, 0, i, w, None)
            return self._planned()

    def next(self, b: int, t: int, schedule, before, after, dist):
        self.stats.steps += 1
        need = [i for i in range(self.B) if not self.plans[i] and self.mask_id in self.now[i][0]]
        if need:
            with self.t_draft:
                upcoming = None if schedule is None else [c for c in schedule[t:] if c > 0]
                graph = self.provider.graph_for(upcoming)
                rounds = [plan_round(graph, self.now[i][0], self.sources[i], self.mask_id, upcoming, self.pruner)
                          for i in need]
                requests = [(i, rnd.states(self.now[i][0]), rnd.children()) for i, rnd in zip(need, rounds)]
            walks = self.scorer.walk(b, t, requests, self.iters(t, max(rnd.steps_deep() for rnd in rounds)))
            with self.t_book:
                for i, w, rnd in zip(need, walks, rounds):
                    self._take(b, t, i, w, rnd)
        with self.t_book:
            return self._planned()

    def _take(self, b: int, t: int, i: int, w: RoundWalk, rnd) -> None:
        st = self.stats
        if rnd is not None:
            st.rounds += 1
            st.drafts_verified += len(rnd.nodes)
            for f in rnd.nodes:
                st.count("depth_offered", rnd.graph.nodes[f]["depth"])
                st.count("node_offered", f)
        hits = 0
        for k, (state, _, code, node) in enumerate(w.steps):
            if code == HIT:
                hits += 1
                f = rnd.nodes[node - 1]
                st.accepted += 1
                st.count("depth_accepted", rnd.graph.nodes[f]["depth"])
                st.count("node_accepted", f)
                if self.check is not None and (self.schedule is None or t + k + 1 < len(self.schedule)):
                    self.check(b, t + k + 1, i, state, w.logits(node), self.schedule)
            elif code == SAME:
                st.skipped_empty_steps += 1
        if rnd is not None:
            st.count("accepted_per_round", hits)
        self.plans[i] = list(w.steps)
        self.sources[i] = w.source

    def _planned(self) -> Planned:
        for i in range(self.B):
            if self.plans[i]:           # a finished row (no mask left) has no plan: it stays
                state, row = self.plans[i].pop(0)[:2]
                self.now[i] = (state, row)
        rows = [row for _, row in self.now]
        return Planned(rows[0][None] if self.B == 1 else torch.stack(rows), [list(s) for s, _ in self.now])


class MismatchCheck:
    """Near-lossless packed mode: compare an accepted draft's distribution with a real forward of that
    state (kept out of every counter) and count the steps whose outcome would differ."""

    def __init__(self, scorer: ModelScorer, step: StepRule, stats: SpeculativeStats):
        self.scorer, self.step, self.stats = scorer, step, stats

    def __call__(self, b, t, row, state, got, schedule):
        real = self.scorer.score(b, [(row, [state])], counted=False)[0][0]
        rows = torch.tensor(state, device=got.device) == self.step.mask_id   # only masked positions are read
        diff = float((real[rows].to(torch.float64) - got[rows].to(torch.float64)).abs().max())
        st = self.stats
        st.max_logit_diff = max(st.max_logit_diff or 0.0, diff)
        st.mismatch_checked += 1
        n = None if schedule is None else [schedule[t]]
        block = torch.tensor([state], device=got.device)
        if not torch.equal(self.step(real[None], block, b, t, n).tokens, self.step(got[None], block, b, t, n).tokens):
            st.mismatches += 1


def _static_shape(cfg: GenerationConfig, spec: SpeculativeConfig, provider: GraphProvider) -> GenerationConfig:
    """``cfg`` with the static shape Spiffy runs at: the one ``cfg`` names, or with ``spec.static`` the graph's
    budget in ``spec.verify``'s layout; refused when the graph's calls do not fit it."""
    if spec.static and not cfg.static_drafts:
        cfg = spec.static_config(cfg, provider.budget)
    if cfg.static_drafts and (cfg.static_layout != spec.verify or provider.budget > cfg.static_drafts):
        raise ConfigError(f"the static shape ({cfg.static_drafts} drafts, {cfg.static_layout}) cannot hold this "
                          f"graph's calls ({provider.budget} drafts, {spec.verify})")
    return cfg


def static_baseline_config(backend, cfg: GenerationConfig, spec: SpeculativeConfig) -> GenerationConfig:
    """The baseline configuration that ``generate_speculative(..., dataclasses.replace(spec, static=True))``
    equals bit for bit: ``cfg`` at the static shape of the graph Spiffy would use (calibrated, user or default)."""
    spec = dataclasses.replace(spec, static=True)
    return _static_shape(cfg, spec, GraphProvider(spec, backend, cfg, sampler_of(backend, cfg)))


@torch.no_grad()
def generate_speculative(backend, prompts: list, cfg: GenerationConfig, spec: SpeculativeConfig,
                         on_block=None) -> GenerationResult:
    """Decode ``prompts`` with Spiffy. Output equals ``generate_baseline``'s token for token (``verify="batch"``
    anywhere, ``verify="packed"`` under the dual cache); see :class:`SpeculativeConfig` for packed
    verification without the dual cache, which is only near-lossless. The rows of a batch are decoded
    together: the rows that need a call at a step share one verification forward."""
    if isinstance(spec, dict):
        spec = SpeculativeConfig(**spec)
    spec.validate()
    cfg.validate(max(len(p) for p in prompts), backend.context_length)
    exact = spec.verify == "batch" or packed_is_exact(cfg.cache)
    if not exact:
        warnings.warn(NEAR_LOSSLESS_MSG.format(cache=cfg.cache), NearLosslessWarning, stacklevel=3)
    t0 = time.perf_counter()
    provider = GraphProvider(spec, backend, cfg, sampler_of(backend, cfg))
    cfg = _static_shape(cfg, spec, provider)
    session = DecodeSession(backend, prompts, cfg)
    step = StepRule.of(backend, cfg)
    stats = SpeculativeStats(verify=spec.verify, graph_source=provider.source, budget=provider.budget, exact=exact)
    scorer = ModelScorer(session, spec, step, token_ranks_needed(provider))
    check = MismatchCheck(scorer, step, stats) if not exact and spec.measure_mismatch else None
    source = SpeculativeSource(scorer, provider, spec.pruner(), backend.mask_id, stats, session.B, step.schedule(),
                               check)
    block_steps = decode_blocks(session, source, step, step.schedule(), on_block=on_block)
    res = finish(session, prompts, block_steps, t0, stats, {**cfg.to_dict(), "speculative": spec.to_dict()})
    stats.nfe, stats.model_s, stats.wall_s = res.nfe, res.model_s, res.wall_s
    stats.drafting_s, stats.bookkeeping_s = source.t_draft.t, source.t_book.t + scorer.t_walk.t
    return res
