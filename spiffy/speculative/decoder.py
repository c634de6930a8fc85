"""Spiffy's decoder: the baseline loop, with each model call also verifying draft states.

Per block: the block's first step is the baseline's full forward (it builds the cache and carries
no drafts). Every later state without a known distribution opens a round: one forward evaluates it
together with the drafts (instantiated from the distribution that produced it), then the
acceptance walk (:mod:`.walk`) applies the baseline's steps, with the baseline's keyed noise, for
as long as the true next state is a verified draft. A step that commits nothing (Dream's schedule
can have such steps) leaves the state, hence its distribution, unchanged: no call is needed.

Rows of a batch are decoded one at a time (each with its own session); a step's noise is shared by
every row of a batch, so each row draws what the batched baseline draws for it, and early stopping
waits for every row.
Result ``nfe`` / ``tokens_processed`` are summed over the rows' calls.
"""
from __future__ import annotations

import time
import warnings

import torch

from ..result import GenerationResult
from ..sampling.baseline import block_done, fill_after_stop, sampler_of, stop_early
from ..sampling.config import GenerationConfig
from ..sampling.noise import step_generator
from ..sampling.schedule import block_schedule
from ..sampling.session import DecodeSession, _sync
from ..sampling.step import denoise_step
from .config import NearLosslessWarning, SpeculativeConfig
from .proposer import DraftSource
from .stats import SpeculativeStats
from .verifier import packed_is_exact, verify, verify_batch
from .walk import GraphProvider, Timer, plan_round, token_ranks_needed

NEAR_LOSSLESS_MSG = ("packed verification with cache={cache!r} is only NEAR-lossless on a bidirectional model: "
                     "drafts attend to positions computed with the current block, so outputs may differ from the "
                     "baseline. Use cache='dual' for exact packed verification, or verify='batch' (exact everywhere).")


class _RowDecoder:
    def __init__(self, backend, cfg: GenerationConfig, spec: SpeculativeConfig, provider: GraphProvider,
                 prompt, stats: SpeculativeStats):
        self.backend, self.cfg, self.spec = backend, cfg, spec
        self.session = DecodeSession(backend, [prompt], cfg)
        self.sampler = sampler_of(backend, cfg)
        self.provider = provider
        self.pruner = spec.pruner()
        self.stats = stats
        self.k = token_ranks_needed(provider)
        self.exact = spec.verify == "batch" or packed_is_exact(cfg.cache)
        self.t_draft, self.t_book = Timer(), Timer()

    def step(self, logits, block, b, t, n):
        """The baseline's step on one row. A step's noise is one draw shared by every row of a batch
        (spiffy.sampling.noise), so a row decoded alone gets the noise the batched baseline gives it."""
        gen = step_generator(self.cfg.seed, b, t, self.backend.device)
        out = denoise_step(logits[None], block, self.backend.mask_id, self.cfg, self.sampler,
                           None if n is None else [n], gen, self.backend.eos_id, self.backend.eot_id)
        return out.tokens

    def decode_block(self, b: int) -> int:
        se, st = self.session, self.stats
        s, e = se.span(b)
        block = se.x[:, s:e].clone()
        schedule = None if self.cfg.threshold is not None else block_schedule(
            self.sampler, self.cfg.block_length, self.cfg.steps_per_block)
        logits = se.begin_block(b)[0]
        st.block_starts += 1
        rnd = None
        t = 0
        while True:
            new = self.step(logits, block, b, t, None if schedule is None else schedule[t])
            t += 1
            st.steps += 1
            se.commit(b, new)
            if (schedule is not None and t == len(schedule)) or (schedule is None and block_done(se, new)):
                break
            if torch.equal(new, block):              # nothing committed: same state, same distribution
                st.skipped_empty_steps += 1
                continue
            with self.t_book:
                key = tuple(new[0].tolist())
                child = rnd.advance(key) if rnd is not None else None
            if child is not None:
                self._accept(rnd, child, b, t, schedule, new)
                logits = rnd.logits[child]
                block = new
                continue
            self._close(rnd)
            with self.t_draft:
                upcoming = None if schedule is None else [c for c in schedule[t:] if c > 0]
                graph = self.provider.graph_for(upcoming)
                source = DraftSource.from_logits(logits, self.k, self.cfg, self.sampler, self.backend.eos_id,
                                                  self.backend.mask_id)
                rnd = plan_round(graph, key, source, self.backend.mask_id, upcoming, self.pruner)
            with self.t_book:
                states = torch.tensor([key] + [rnd.inst.states[f] for f in rnd.nodes], dtype=torch.long,
                                      device=new.device)
            all_logits = verify(se, b, states, self.spec.verify)
            with self.t_book:
                logits = all_logits[0]
                rnd.logits = {f: all_logits[i + 1] for i, f in enumerate(rnd.nodes)}
                st.rounds += 1
                st.drafts_verified += len(rnd.nodes)
                for f in rnd.nodes:
                    st.count("depth_offered", graph.nodes[f]["depth"])
                    st.count("node_offered", f)
            block = new
        self._close(rnd)
        return t

    def _accept(self, rnd, child, b, t, schedule, new):
        st = self.stats
        st.accepted += 1
        st.count("depth_accepted", rnd.graph.nodes[child]["depth"])
        st.count("node_accepted", child)
        if self.exact or not self.spec.measure_mismatch:
            return
        # near-lossless packed mode: compare with a real forward of the accepted state (not counted)
        se = self.session
        saved = (se.nfe, se.tokens_processed, se.model_time)
        real = verify_batch(se, b, new)[0]
        se.nfe, se.tokens_processed, se.model_time = saved
        got = rnd.logits[child]
        rows = new[0] == self.backend.mask_id          # only masked positions' logits are computed and read
        diff = float((real[rows].to(torch.float64) - got[rows].to(torch.float64)).abs().max())
        st.max_logit_diff = max(st.max_logit_diff or 0.0, diff)
        n = None if schedule is None else schedule[t]
        st.mismatch_checked += 1
        if not torch.equal(self.step(real, new, b, t, n), self.step(got, new, b, t, n)):
            st.mismatches += 1

    def _close(self, rnd):
        if rnd is not None:
            self.stats.count("accepted_per_round", rnd.accepted)


@torch.no_grad()
def generate_speculative(backend, prompts: list, cfg: GenerationConfig, spec: SpeculativeConfig,
                         on_block=None) -> GenerationResult:
    """Decode ``prompts`` with Spiffy. Output equals ``generate_baseline``'s token for token (``verify="batch"``
    anywhere, ``verify="packed"`` under the dual cache); see :class:`SpeculativeConfig` for packed
    verification without the dual cache, which is only near-lossless."""
    if isinstance(spec, dict):
        spec = SpeculativeConfig(**spec)
    spec.validate()
    cfg.validate(max(len(p) for p in prompts), backend.context_length)
    if spec.verify == "packed" and not packed_is_exact(cfg.cache):
        warnings.warn(NEAR_LOSSLESS_MSG.format(cache=cfg.cache), NearLosslessWarning, stacklevel=3)
    t0 = time.perf_counter()
    sampler = sampler_of(backend, cfg)
    provider = GraphProvider(spec, backend, cfg, sampler)
    stats = SpeculativeStats(verify=spec.verify, graph_source=provider.source, budget=provider.budget)
    rows = [_RowDecoder(backend, cfg, spec, provider, p, stats) for p in prompts]
    block_steps = []
    for b in range(cfg.num_blocks):
        block_steps.append(max(rd.decode_block(b) for rd in rows))
        if on_block is not None:   # as generate_baseline's: each row's final tokens of block b
            on_block(b, [rd.session.x[0, slice(*rd.session.span(b))].tolist() for rd in rows])
        if cfg.early_stop and b + 1 < cfg.num_blocks and all(stop_early(rd.session, b) for rd in rows):
            for rd in rows:
                fill_after_stop(rd.session, b)
            break
    _sync(backend.device)
    sessions = [rd.session for rd in rows]
    stats.exact = all(rd.exact for rd in rows)
    stats.nfe = sum(s.nfe for s in sessions)
    stats.model_s = sum(s.model_time for s in sessions)
    stats.drafting_s = sum(rd.t_draft.t for rd in rows)
    stats.bookkeeping_s = sum(rd.t_book.t for rd in rows)
    stats.wall_s = time.perf_counter() - t0
    gen = [s.generated()[0].tolist() for s in sessions]
    return GenerationResult(
        prompt_ids=[list(p) for p in prompts], token_ids=gen, text=[backend.decode(g) for g in gen],
        nfe=stats.nfe, tokens_processed=sum(s.tokens_processed for s in sessions), block_steps=block_steps,
        wall_s=stats.wall_s, model_s=stats.model_s, stats=stats, config={**cfg.to_dict(), "speculative": spec.to_dict()})
