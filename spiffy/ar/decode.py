"""The AR-verifier decode loop: draft, verify in one target forward, commit, repeat.

Strategies (all lossless — greedy output equals the target's greedy decoding, sampled output is
distributed as the target's own sampling):

- no drafter: the target's plain decoding (one token per forward), the baseline;
- a dLLM drafter (:class:`~spiffy.ar.drafter.DLLMDrafter`) with a fixed draft length γ (SpecDiff),
  optionally with DiffuSpec's causal-consistency path search and/or adaptive draft length, and/or a
  D²SD-style draft tree with ``tree`` branches;
- an AR drafter (:class:`~spiffy.ar.ar_drafter.ARDrafter`): classic speculative decoding.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence, Union

import torch

from ..errors import ConfigError
from .adaptive import AdaptiveLength
from .best_first import best_first_tree
from .gate import CPU_VERIFY_COST, DraftGate
from .path_search import PathSearchConfig, causal_path_search
from .result import ARResult
from .tree import DraftTree, branch_alternatives
from .verify import RULES, accept_prefix, greedy_chain, greedy_tree, sample_chain, sample_tree, target_probs


@dataclass
class ARDecodeConfig:
    max_new_tokens: int = 128
    draft_length: int = 8          # γ (the first γ when adaptive)
    adaptive: bool = False         # DiffuSpec adaptive draft length
    min_draft: int = 20
    max_draft: int = 30
    grow: int = 10
    ema: float = 0.5
    path_search: bool = False      # DiffuSpec causal-consistency path search
    beam: int = 3
    tau: float = 0.8
    max_candidates: int = 15
    lam: float = 0.5
    ngram: Optional[str] = None    # n-gram artifact path [default: the shipped one built with the target's tokenizer]
    tree: int = 0                  # D²SD draft-tree branches (0 = a single chain)
    tree_nodes: int = 0            # > 0: a best-first tree of this many nodes from one draft's per-slot distributions (DDTree)
    drafter_steps: int = 1         # denoising steps of a dLLM drafter
    temperature: float = 0.0       # 0 = greedy
    seed: int = 0
    gate: Optional[float] = None   # draft gate cost (drafted/plain round time): None = auto (CPU 1.8, GPU off), 0 = off
    accept_rule: str = "exact"     # "always"/"ratio_no_residual" are deliberately wrong (tests only)

    def check(self):
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")
        if self.draft_length < 1:
            raise ConfigError(f"draft length γ must be >= 1 (got {self.draft_length})")
        if self.drafter_steps < 1:
            raise ConfigError(f"drafter steps must be >= 1 (got {self.drafter_steps})")
        if self.tree < 0:
            raise ConfigError(f"tree branches must be >= 0 (got {self.tree})")
        if self.tree_nodes < 0:
            raise ConfigError(f"tree nodes must be >= 0 (got {self.tree_nodes})")
        if self.tree_nodes and self.tree:
            raise ConfigError("choose one kind of tree: best-first (tree_nodes) or re-drafted branches (tree)")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (got {self.temperature})")
        if self.gate is not None and self.gate < 0:
            raise ConfigError(f"gate cost must be >= 0 (got {self.gate})")
        if self.accept_rule not in RULES:
            raise ConfigError(f"accept_rule must be one of {RULES}")
        self.path_cfg().check()
        if self.adaptive:
            AdaptiveLength(self.min_draft, self.max_draft, self.grow, self.ema)
        return self

    def path_cfg(self) -> PathSearchConfig:
        return PathSearchConfig(self.beam, self.tau, self.max_candidates, self.lam)

    def to_dict(self) -> dict:
        return asdict(self)


def strategy_name(drafter, cfg: ARDecodeConfig) -> str:
    if drafter is None:
        return "target"
    kind = getattr(drafter, "kind", "")
    if kind == "ar":
        return "ar-drafter"
    parts = [{"lookup": "ngram", "block": "diffusion"}.get(kind, "dllm")]
    if cfg.path_search:
        parts.append("path")
    if cfg.adaptive:
        parts.append("adaptive")
    if cfg.tree:
        parts.append(f"redraft{cfg.tree}" if kind == "block" else f"tree{cfg.tree}")
    if cfg.tree_nodes:
        parts.append(f"tree{cfg.tree_nodes}")
    return "+".join(parts)


def _cut_after_stop(toks, stop) -> list:
    out = []
    for t in toks:
        out.append(int(t))
        if int(t) in stop:
            break
    return out


def _before_stop(toks, stop) -> int:
    """Drafted tokens before the first stop token (what adaptive γ observes)."""
    for i, t in enumerate(toks):
        if int(t) in stop:
            return i
    return len(toks)


def _read_all(drafts) -> list:
    """Every draft's tokens, in one read when they are on the device."""
    if all(isinstance(d.ids, torch.Tensor) for d in drafts):
        flat = torch.cat([d.ids for d in drafts]).tolist()
        out, at = [], 0
        for d in drafts:
            out.append(flat[at:at + d.ids.numel()])
            at += d.ids.numel()
        return out
    return [d.tokens for d in drafts]


@dataclass
class Proposal:
    """One round's draft: a chain (``tokens``, with ``q`` when verified by speculative sampling) or a
    ``tree``; ``before``: drafted length before a stop token (what adaptive γ observes); ``key``: the
    drafter's trust key for the cost gate."""

    tokens: list = field(default_factory=list)
    q: Optional[torch.Tensor] = None
    tree: Optional[DraftTree] = None
    before: int = 0
    key: object = None
    draft_ids: Optional[torch.Tensor] = None  # a chain still on the device: ``tokens``/``before`` come
    stop: frozenset = frozenset()             # from it, cut after a stop token, once it has been verified

    def settle(self, raw: list) -> None:
        """The draft ``raw`` read back with its verdict: the tokens verified, cut after a stop token."""
        self.tokens, self.before = _cut_after_stop(raw, self.stop), _before_stop(raw, self.stop)


class _Proposer:
    """Builds each round's draft (a chain, or a tree) for a dLLM or AR drafter."""

    def __init__(self, drafter, cfg: ARDecodeConfig, stop: set, ngram):
        self.d = drafter
        self.cfg = cfg
        self.stop = stop
        self.ngram = ngram
        self.seed = int(cfg.seed)      # drafters key their noise by (seed, prefix length)
        self.sample = cfg.temperature > 0
        # drafts whose tokens are chosen deterministically are verified as point masses
        self.point_mass = (cfg.path_search or cfg.tree > 0 or cfg.tree_nodes > 0
                           or getattr(drafter, "deterministic", False))

    def __call__(self, prefix, gamma) -> Proposal:
        if self.cfg.tree_nodes:
            return self.best_first(prefix, gamma)
        return self.tree(prefix, gamma) if self.cfg.tree else self.chain(prefix, gamma, defer=True)[0]

    def best_first(self, prefix, gamma) -> Proposal:
        """DDTree: the ``tree_nodes`` most likely prefixes of one draft's per-slot distributions."""
        dr = self.d.draft(prefix, gamma, self.seed, sample=False)
        tree, best = best_first_tree(dr.q, self.cfg.tree_nodes, self.stop)
        return Proposal(tree=tree, before=_before_stop(best, self.stop), key=dr.key)

    def chain(self, prefix, gamma, defer: bool = False):
        """(Proposal, the drafter's Draft, confidence of the proposed tokens). ``defer``: a greedy draft that is
        still on the device stays there; the verification reads it back with its verdict, in one copy."""
        cfg = self.cfg
        if cfg.path_search:
            dr = self.d.draft(prefix, gamma, self.seed, sample=False)
            raw = dr.tokens
            toks = causal_path_search(dr.q, prefix, self.ngram, cfg.path_cfg(), sorted(self.stop)) if raw else []
            conf = dr.q[torch.arange(len(toks)), torch.tensor(toks, dtype=torch.long)] if toks else dr.conf[:0]
            return Proposal(toks, None, None, _before_stop(raw, self.stop), dr.key), dr, conf
        dr = self.d.draft(prefix, gamma, self.seed, sample=self.sample and not self.point_mass)
        q = None if (self.point_mass or not self.sample) else dr.q
        if defer and isinstance(dr.ids, torch.Tensor):
            return Proposal(q=q, key=dr.key, draft_ids=dr.ids, stop=frozenset(self.stop)), dr, None
        toks = _cut_after_stop(dr.tokens, self.stop)
        q = None if q is None else q[: len(toks)]
        return Proposal(toks, q, None, _before_stop(dr.tokens, self.stop), dr.key), dr, dr.conf[: len(toks)]

    def tree(self, prefix, gamma) -> Proposal:
        if hasattr(self.d, "draft_tree"):   # a drafter that builds its own tree (prompt lookup's trie)
            tree, best, key = self.d.draft_tree(prefix, gamma, self.cfg.tree, self.stop)
            return Proposal(tree=tree, before=_before_stop(best, self.stop), key=key)
        main, dr, conf = self.chain(prefix, gamma)
        toks = main.tokens
        tree = DraftTree()
        tree.add_chain(-1, toks, self.stop)
        rows = []
        for i, alt in branch_alternatives(conf, dr.q, toks, self.cfg.tree):
            parent = i - 1
            rest = gamma - i - 1
            if alt in self.stop or rest < 1:
                tree.add_chain(parent, [alt], self.stop)
            else:
                rows.append((parent, alt, list(prefix) + toks[:i] + [alt], rest))
        if rows:
            drafts = self.d.draft_batch([r[2] for r in rows], [r[3] for r in rows], self.seed, sample=False)
            for (parent, alt, _, _), d in zip(rows, _read_all(drafts)):
                tree.add_chain(parent, [alt] + d, self.stop)
        return Proposal(tree=tree, before=main.before, key=dr.key)


def plain_round(state, pending: int, cfg: ARDecodeConfig, g) -> tuple:
    """The target alone: one forward, one token. Returns (new tokens, accepted, drafted)."""
    row = state.extend([pending])[-1]
    nxt = int(torch.multinomial(target_probs(row, cfg.temperature), 1, generator=g)[0]) if cfg.temperature > 0 \
        else int(row.argmax())
    return [nxt], 0, 0


def chain_round(state, pending: int, prop: Proposal, cfg: ARDecodeConfig, g) -> tuple:
    """Verify a chain in one target forward; keep the accepted prefix of the target's cache. A draft still on
    the device goes into the forward as it is; it comes back with the verdict in one copy."""
    base = state.length
    if prop.draft_ids is not None:
        logits = state.extend_on_device(pending, prop.draft_ids)
        verdict = logits.argmax(-1) if cfg.temperature == 0 else \
            sample_chain(prop.draft_ids, prop.q, logits, cfg.temperature, g, cfg.accept_rule, prop.stop)
        host = torch.cat([prop.draft_ids.to(logits.device), verdict]).tolist()   # the round's one read
        raw, rest = host[:prop.draft_ids.numel()], host[prop.draft_ids.numel():]
        state.note([pending] + raw)
        prop.settle(raw)
        n_acc, nxt = accept_prefix(prop.tokens, rest) if cfg.temperature == 0 else rest
    else:
        toks = prop.tokens
        logits = state.extend([pending] + toks)
        if cfg.temperature > 0:
            n_acc, nxt = sample_chain(toks, prop.q, logits, cfg.temperature, g, cfg.accept_rule).tolist()
        else:
            n_acc, nxt = greedy_chain(toks, logits)
    state.crop(base + 1 + n_acc)
    return prop.tokens[:n_acc] + [nxt], n_acc, len(prop.tokens)


def tree_round(state, pending: int, prop: Proposal, cfg: ARDecodeConfig, g) -> tuple:
    """Verify a draft tree in one target forward (ancestor mask); keep the accepted path's cache."""
    base, tree = state.length, prop.tree
    parents = [-1] + [p + 1 if p >= 0 else 0 for p in tree.parents]
    logits = state.extend_tree([pending] + tree.tokens, parents)
    if cfg.temperature > 0:
        path, nxt = sample_tree(tree.tokens, tree.parents, logits, cfg.temperature, g)
    else:
        path, nxt = greedy_tree(tree.tokens, tree.parents, logits)
    state.keep(base, [0] + [1 + j for j in path])
    return [tree.tokens[j] for j in path] + [nxt], len(path), len(tree)


def _as_prompt_ids(target, prompt, chat: bool) -> list:
    if isinstance(prompt, str):
        ids = target.encode_prompt(prompt, chat)
    elif isinstance(prompt, Sequence) and all(isinstance(t, int) for t in prompt):
        ids = list(prompt)
    else:
        raise ConfigError("the prompt must be text or a list of token ids")
    if not ids:
        raise ConfigError("the prompt is empty")
    return ids


def generate_ar(target, drafter=None, prompt: Union[str, list] = "", config: Optional[ARDecodeConfig] = None,
                chat: bool = True, ngram=None, on_tokens=None, **overrides) -> ARResult:
    """Decode ``prompt`` with ``target`` (an :class:`~spiffy.ar.target.ARTarget`), drafting with
    ``drafter`` (a :class:`DLLMDrafter`, an :class:`ARDrafter`, or None for plain target decoding).
    ``on_tokens(new)``, when given, is called after every round with the tokens it committed (a
    server streams them); an exception it raises ends the decode."""
    cfg = ARDecodeConfig(**{**(config.to_dict() if config else {}), **overrides}).check()
    ids = _as_prompt_ids(target, prompt, chat)
    stop = set(target.stop_ids)
    kind = getattr(drafter, "kind", None)
    if kind == "ar" and (cfg.path_search or cfg.tree or cfg.tree_nodes):
        raise ConfigError("path search and draft trees need a diffusion drafter (got an AR drafter)")
    if cfg.path_search and ngram is None:
        from .ngram import NGramModel

        ngram = NGramModel.for_tokenizer(target.tokenizer, cfg.ngram)
    g = torch.Generator(device=target.device).manual_seed(int(cfg.seed))   # draws beside the target's logits
    ctl = AdaptiveLength(cfg.min_draft, cfg.max_draft, cfg.grow, cfg.ema,
                         gamma=min(max(cfg.draft_length, cfg.min_draft), cfg.max_draft)) if cfg.adaptive else None
    prop = _Proposer(drafter, cfg, stop, ngram) if drafter is not None else None
    cost = cfg.gate if cfg.gate is not None else (CPU_VERIFY_COST if target.device.type == "cpu" else 0.0)
    gate = DraftGate(cost=cost) if cost > 1 else None
    if drafter is not None:
        drafter.reset()
    t_calls, t_s = target.calls, target.seconds
    d_calls, d_s = (drafter.calls, drafter.seconds) if drafter is not None else (0, 0.0)

    t0 = time.perf_counter()
    state = target.new_state(getattr(drafter, "feature_layers", None))
    if hasattr(drafter, "attach"):
        drafter.attach(state)   # a drafter that reads the target's features at the committed positions
    if len(ids) > 1:
        state.extend(ids[:-1])
    pending = ids[-1]
    out: list = []
    accepted, drafted = [], []
    gated = 0
    done = False
    while not done:
        gamma = ctl.gamma if ctl is not None else cfg.draft_length
        gamma = min(gamma, cfg.max_new_tokens - len(out) - 1)   # room for the target's own token
        gamma = min(gamma, getattr(drafter, "max_draft", gamma))
        proposal = prop(ids + out, gamma) if prop is not None and gamma >= 1 else None
        if proposal is not None and gate is not None and not gate.allow(proposal.key):
            proposal = None   # not worth a wider forward: a plain round
            gated += 1
        if proposal is None:
            new, n_acc, n_draft = plain_round(state, pending, cfg, g)
        elif proposal.tree is not None:
            new, n_acc, n_draft = tree_round(state, pending, proposal, cfg, g)
        else:
            new, n_acc, n_draft = chain_round(state, pending, proposal, cfg, g)
        if prop is not None:
            accepted.append(n_acc)
            drafted.append(n_draft)
            if proposal is not None:
                if ctl is not None and (n_draft or not getattr(drafter, "deterministic", False)):
                    ctl.observe(proposal.before, n_acc)   # a lookup that found nothing says nothing about γ
                if gate is not None and n_draft:
                    gate.observe(proposal.key, n_acc)
        n0 = len(out)
        for t in new:
            out.append(int(t))
            if int(t) in stop or len(out) >= cfg.max_new_tokens:
                done = True
                break
        pending = out[-1]
        if on_tokens is not None:
            on_tokens(out[n0:])
    wall = time.perf_counter() - t0

    tc = target.calls - t_calls
    dc = (drafter.calls - d_calls) if drafter is not None else 0
    rounds = tc - (1 if len(ids) > 1 else 0)
    return ARResult(
        prompt_ids=ids, token_ids=out, text=target.decode(out), nfe=tc + dc, wall_s=wall, target_calls=tc,
        drafter_calls=dc, rounds=rounds, mean_accepted=len(out) / max(1, rounds), accepted=accepted,
        drafted=drafted, gated=gated, target_s=target.seconds - t_s,
        drafter_s=(drafter.seconds - d_s) if drafter is not None else 0.0,
        strategy=strategy_name(drafter, cfg), config=cfg.to_dict())


@torch.no_grad()
def hf_generate(target, prompt_ids: list, max_new_tokens: int, temperature: float = 0.0,
                prompt_lookup_num_tokens: Optional[int] = None) -> list:
    """The target's own transformers ``generate`` (greedy; with ``prompt_lookup_num_tokens``, transformers'
    prompt-lookup decoding), new tokens up to and including a stop token."""
    x = torch.tensor([prompt_ids], dtype=torch.long, device=target.device)
    eos = target.stop_ids or None
    pad = eos[0] if eos else 0
    extra = {"prompt_lookup_num_tokens": prompt_lookup_num_tokens} if prompt_lookup_num_tokens else {}
    out = target.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=eos, pad_token_id=pad, min_new_tokens=0, **extra)
    new = out[0, len(prompt_ids):].tolist()
    return _cut_after_stop(new, set(target.stop_ids))
