"""Spiffy's decoder: the one block loop (:mod:`spiffy.sampling.loop`) with a source of distributions
that verifies draft states with every model call.

Per block: the block's first step is the baseline's full forward (it builds the cache and carries no
drafts). After a step, each row either stands on a draft its previous call verified (the step landed
on it: its distribution is already known, no call), or on a state that committed nothing (same state,
same distribution, no call), or it opens a round: drafts are instantiated from the distribution that
produced its state (proposer), and ONE forward evaluates the real state of every such row with all
their drafts (scorer: :mod:`.verifier`). The walk (:mod:`.walk`) then follows the baseline's own steps
with the baseline's keyed noise for as long as they land on verified drafts. Each row of a batch gets
exactly the distributions the batched baseline computes for it, so outputs are the baseline's.
"""
from __future__ import annotations

import dataclasses
import time
import warnings

import torch

from ..result import GenerationResult
from ..sampling.baseline import finish
from ..sampling.config import GenerationConfig
from ..errors import ConfigError
from ..sampling.loop import StepRule, decode_blocks, sampler_of
from ..sampling.session import DecodeSession
from .config import NearLosslessWarning, SpeculativeConfig
from .proposer import DraftSource
from .stats import SpeculativeStats
from .verifier import packed_is_exact, verify
from .walk import GraphProvider, Timer, plan_round, token_ranks_needed

NEAR_LOSSLESS_MSG = ("packed verification with cache={cache!r} is only NEAR-lossless on a bidirectional model: "
                     "drafts attend to positions computed with the current block, so outputs may differ from the "
                     "baseline. Use cache='dual' for exact packed verification, or verify='batch' (exact everywhere).")


class ModelScorer:
    """Distributions from the model: the block's first forward, and verification forwards that evaluate
    several rows' real states and drafts at once."""

    def __init__(self, session: DecodeSession, spec: SpeculativeConfig, step: StepRule, k: int):
        self.session, self.spec, self.step, self.k = session, spec, step, k

    def first(self, b: int) -> list:
        return list(self.session.begin_block(b))

    def draft_source(self, row: int, dist, b: int, t: int) -> DraftSource:
        return DraftSource.from_logits(dist, self.k, self.step.cfg, self.step.sampler, self.step.eos_id,
                                       self.step.mask_id)

    def score(self, b: int, requests: list, counted: bool = True) -> list:
        """requests: (row, [real state, draft states...] as tuples) -> per request, a list of [n, V]."""
        return [list(lg) for lg in verify(self.session, b, requests, self.spec.verify, counted=counted)]


class SpeculativeSource:
    """Proposer + scorer + acceptance for every row of a batch (the decoder's and the replay's)."""

    def __init__(self, scorer, provider: GraphProvider, pruner, mask_id: int, stats: SpeculativeStats, B: int,
                 check=None):
        self.scorer, self.provider, self.pruner, self.mask_id = scorer, provider, pruner, mask_id
        self.stats, self.B, self.check = stats, B, check
        self.rounds = [None] * B
        self.host = None        # every row's current block state as lists (the host's copy; None: unknown)
        self.t_draft, self.t_book = Timer(), Timer()

    def close(self):
        for rnd in self.rounds:
            if rnd is not None:
                self.stats.count("accepted_per_round", rnd.accepted)
        self.rounds = [None] * self.B

    def first(self, b: int):
        self.close()
        self.host = None
        self.stats.block_starts += 1
        self.stats.steps += 1
        return self.scorer.first(b)

    def next(self, b: int, t: int, schedule, before: torch.Tensor, after: torch.Tensor, dist: list) -> list:
        st = self.stats
        st.steps += 1
        dist = list(dist)
        requests = []
        with self.t_book:   # ONE device -> host copy per step (the block's first step also brings `before`)
            if self.host is None:
                rows_before, rows_after = torch.stack([before, after]).tolist()
            else:
                rows_before, rows_after = self.host, after.tolist()
            self.host = rows_after
        for i in range(self.B):
            new = tuple(rows_after[i])
            if self.mask_id not in new:                 # row finished: no distribution is needed
                continue
            if new == tuple(rows_before[i]):            # nothing committed: same state, same distribution
                st.skipped_empty_steps += 1
                continue
            rnd = self.rounds[i]
            with self.t_book:
                child = rnd.advance(new) if rnd is not None else None
            if child is not None:
                st.accepted += 1
                st.count("depth_accepted", rnd.graph.nodes[child]["depth"])
                st.count("node_accepted", child)
                if self.check is not None:
                    self.check(b, t, i, new, rnd.logits[child], schedule)
                dist[i] = rnd.logits[child]
                continue
            if rnd is not None:
                st.count("accepted_per_round", rnd.accepted)
            with self.t_draft:
                upcoming = None if schedule is None else [c for c in schedule[t:] if c > 0]
                graph = self.provider.graph_for(upcoming)
                source = self.scorer.draft_source(i, dist[i], b, t - 1)
                rnd = plan_round(graph, new, source, self.mask_id, upcoming, self.pruner)
            self.rounds[i] = rnd
            requests.append((i, [new] + [rnd.inst.states[f] for f in rnd.nodes]))
        if requests:
            scored = self.scorer.score(b, requests)
            with self.t_book:
                for (i, _), out in zip(requests, scored):
                    rnd = self.rounds[i]
                    dist[i] = out[0]
                    rnd.logits = dict(zip(rnd.nodes, out[1:]))
                    st.rounds += 1
                    st.drafts_verified += len(rnd.nodes)
                    for f in rnd.nodes:
                        st.count("depth_offered", rnd.graph.nodes[f]["depth"])
                        st.count("node_offered", f)
        return dist


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
    source = SpeculativeSource(scorer, provider, spec.pruner(), backend.mask_id, stats, session.B, check)
    block_steps = decode_blocks(session, source, step, step.schedule(), on_block=on_block)
    source.close()
    res = finish(session, prompts, block_steps, t0, stats, {**cfg.to_dict(), "speculative": spec.to_dict()})
    stats.nfe, stats.model_s, stats.wall_s = res.nfe, res.model_s, res.wall_s
    stats.drafting_s, stats.bookkeeping_s = source.t_draft.t, source.t_book.t
    return res
