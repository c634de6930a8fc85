"""The runtime of a feature-reading block drafter (:mod:`spiffy.ar.block_model`) for an AR target.

Attached to a :class:`~spiffy.ar.target.TargetState`, it reads the target's features at the committed
positions (the target keeps them beside its KV cache, computed by the verification forwards: no extra
target call) and keeps its own per-layer context keys/values for them (:class:`ContextCache`), extended with
each committed token and cut back to the longest common prefix when the target's committed text changes.

A draft is one drafter forward: the block is the pending token (the anchor) and any tokens already chosen
after it (a re-drafted branch), then mask slots; every slot gets its own distribution, which is what exact
speculative sampling and best-first trees need.

Vocabulary shortlist (optional, ``shortlist.json`` beside the drafter's weights): the drafter's head is the
target's, 49,152 rows for SmolLM2, and reading it is most of a drafter call on a CPU. With a shortlist the
drafter scores only the listed ids plus every id of the text it has seen (the prompt and the committed tokens,
added as they arrive), and proposes from the softmax over those: a drafter distribution that is zero
elsewhere. The target's verification is unchanged, so the output is too (greedy: the target's argmax decides;
sampled: exact speculative sampling holds for any drafter distribution, this one included).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..devices import to_device
from ..errors import ConfigError
from ..sampling.noise import step_generator
from ..timing import ForwardClock
from .block_model import BlockDrafterModel, target_fingerprint
from .drafter import Draft


def check_fit(model: BlockDrafterModel, target) -> None:
    """A drafter trained for another target (hidden size, depth, vocabulary, weights) is refused."""
    c = model.cfg
    emb = target.model.get_input_embeddings().weight
    head = target.model.get_output_embeddings().weight
    problems = []
    if c.target_hidden != target.hidden_size:
        problems.append(f"hidden size {c.target_hidden} != {target.hidden_size}")
    if c.vocab_size != head.shape[0]:
        problems.append(f"vocabulary {c.vocab_size} != {head.shape[0]}")
    if c.target_num_layers != target.num_layers or max(c.target_layers, default=0) >= target.num_layers:
        problems.append(f"{c.target_num_layers} layers (reads {c.target_layers}) != {target.num_layers}")
    if c.hidden_size != emb.shape[1]:
        problems.append(f"drafter width {c.hidden_size} != the target's embedding width {emb.shape[1]}")
    if not problems and c.target_fingerprint and c.target_fingerprint != target_fingerprint(emb, head):
        problems.append("the target's embedding/head weights differ from the ones it was trained with")
    if problems:
        raise ConfigError(f"this block drafter was trained for {c.target!r}, not for {target.name!r}: "
                          + "; ".join(problems))


class ContextCache:
    """Per-layer keys/values of the drafter's context, for the committed tokens in ``tokens``."""

    def __init__(self):
        self.tokens: list = []
        self.kv: Optional[list] = None     # [(k [1, kvh, C, D], v)] per layer

    def __len__(self):
        return len(self.tokens)

    def crop(self, n: int):
        if n < len(self.tokens):
            del self.tokens[n:]
            self.kv = [(k[:, :, :n], v[:, :, :n]) for k, v in self.kv] if n > 0 else None

    def extend(self, tokens: list, kv: list):
        self.tokens.extend(int(t) for t in tokens)
        self.kv = kv if self.kv is None else [(torch.cat([k0, k1], 2), torch.cat([v0, v1], 2))
                                              for (k0, v0), (k1, v1) in zip(self.kv, kv)]


class BlockDrafter:
    """Drafts a block of ``model.cfg.block - 1`` tokens per forward for ``target`` from its features."""

    kind = "block"

    def __init__(self, model: BlockDrafterModel, target, temperature: float = 0.0, name: Optional[str] = None,
                 shortlist: bool = True):
        check_fit(model, target)
        self.model = model.eval()
        self.model.bind(target.model.get_input_embeddings().weight, target.model.get_output_embeddings().weight)
        self.target = target
        self.feature_layers = tuple(int(i) for i in model.cfg.target_layers)
        self.temperature = float(temperature)
        self.block = int(model.cfg.block)
        self.reset()
        self._name = name or model.cfg.target + "-drafter"
        ids = model.shortlist if shortlist else None    # the model's own (its folder's shortlist.json), if any
        self.shortlist = None if ids is None else torch.as_tensor(ids, dtype=torch.long).cpu().unique()
        if self.shortlist is not None and (self.shortlist.numel() == 0 or self.shortlist[0] < 0
                                           or self.shortlist[-1] >= target.vocab_size):
            raise ConfigError(f"a shortlist holds token ids in [0, {target.vocab_size}) (got "
                              f"{self.shortlist.numel()} ids)")
        self.calls = 0
        self.clock = ForwardClock(target.device)    # CUDA events on a GPU: timing never waits for the device

    @property
    def seconds(self) -> float:
        return self.clock.total()

    @property
    def name(self):
        return self._name

    @property
    def max_draft(self) -> int:
        return self.block - 1

    def reset(self):
        self.cache = ContextCache()
        self.state = None
        self._rows = None       # (ids [S] on the device, their head rows [S, H], the ids as a host set)
        self._unscored = []     # ids that entered the context since the last draft (for the shortlist's rows)

    def _head_rows(self, seen: list):
        """The ids the drafter scores and their head rows: the shortlist and every id in ``seen`` (rows are added
        once, when an id first appears; a new prompt starts again from the shortlist)."""
        m = self.model
        dev = m.fc.weight.device
        if self._rows is None:
            ids = to_device(self.shortlist, dev)
            self._rows = (ids, m.head.index_select(0, ids), set(self.shortlist.tolist()))
        ids, rows, member = self._rows
        new = sorted({int(t) for t in seen} - member)      # on the host: no device read
        if new:
            member.update(new)
            new = to_device(torch.tensor(new, dtype=torch.long), dev)
            self._rows = (torch.cat([ids, new]), torch.cat([rows, m.head.index_select(0, new)]), member)
        return self._rows[0], self._rows[1]

    def attach(self, state):
        """Read features from ``state`` (a TargetState of this drafter's target) from now on."""
        if state.target is not self.target:
            raise ConfigError("the block drafter reads the features of the target it was built with")
        if state.feature_layers != self.feature_layers:
            raise ConfigError(f"the target's state keeps the features of layers {state.feature_layers}, the "
                              f"drafter reads {self.feature_layers}: make it with new_state(drafter.feature_layers)")
        self.reset()
        self.state = state

    def _kv(self, features: torch.Tensor, start: int) -> list:
        m = self.model
        dev = m.fc.weight.device
        pos = torch.arange(start, start + features.shape[0], device=dev)[None]
        return m.context_kv(m.project(features.to(dev)[None]), pos)

    @torch.no_grad()
    def sync(self):
        """Bring the context cache to the target's committed tokens: cut back to the common prefix, then
        extend with the features of the tokens after it."""
        st = self.state
        if st is None:
            raise RuntimeError("attach the drafter to the target's state first")
        common = 0
        for a, b in zip(self.cache.tokens, st.tokens):
            if a != b:
                break
            common += 1
        self.cache.crop(common)
        if st.length > common:
            if st.features is None or st.features.shape[0] != st.length:
                raise RuntimeError("the target did not keep its features (was the drafter built with it?)")
            self.cache.extend(st.tokens[common:], self._kv(st.features[common:], common))
            if self.shortlist is not None:
                self._unscored += st.tokens[common:]

    @torch.no_grad()
    def block_logits(self, known: list) -> tuple:
        """(logits [B, slots, S], ids [S] or None) for rows of ``known`` tokens (the anchor first) placed at the
        block's start after the current context, the rest of the block masked: S ids of the shortlist and the seen
        text (logit j is id ``ids[j]``), or the whole head (ids None: logit j is id j)."""
        m = self.model
        dev = m.fc.weight.device
        C = len(self.cache)
        B, N = len(known), m.cfg.slots
        toks = torch.zeros(B, N, dtype=torch.long, device=dev)
        masked = torch.ones(B, N, dtype=torch.bool, device=dev)
        for b, row in enumerate(known):
            if not 1 <= len(row) <= self.block - 1:
                raise ConfigError(f"a block of {self.block} holds 1..{self.block - 1} known tokens (got {len(row)})")
            toks[b, : len(row)] = to_device(torch.tensor(row, dtype=torch.long), dev)
            masked[b, : len(row)] = False
        pos = (C + torch.arange(N, device=dev))[None].expand(B, -1)
        kv = self.cache.kv or [None] * len(m.layers)   # attention broadcasts the one cached row over B
        h = m.hidden(toks, masked, pos, kv)
        if self.shortlist is None:
            return m.logits(h), None
        ids, rows = self._head_rows(self._unscored + [t for row in known for t in row])
        self._unscored = []
        return torch.nn.functional.linear(h, rows.to(h.dtype)), ids

    @torch.no_grad()
    def draft_batch(self, prefixes: list, gammas: list, seed: int = 0, sample: bool = False) -> list:
        """Draft after each prefix (the committed text, then any tokens already chosen): one forward for all
        rows. Sampled drafts draw every slot from its own distribution with noise keyed by (seed, prefix
        length)."""
        t0 = self.clock.start()
        self.sync()
        C = len(self.cache)
        known = []
        for p, g in zip(prefixes, gammas):
            if g < 1:
                raise ConfigError(f"draft length must be >= 1 (got {g})")
            if len(p) <= C:
                raise ConfigError("a prefix must extend the target's committed text by the pending token")
            known.append([int(t) for t in p[C:]])
        logits, ids = self.block_logits(known)
        logits = logits.to(torch.float64)
        V = self.target.vocab_size
        out = []
        for b, (row, g) in enumerate(zip(known, gammas)):
            n = min(g, self.block - len(row))
            first = len(row) - 1 if self.model.cfg.shift else len(row)   # the slot whose output is the next token
            lg = logits[b, first: first + n, : V if ids is None else None]
            t = self.temperature if sample and self.temperature > 0 else 1.0
            q = torch.softmax(lg / t, dim=-1)
            if sample and self.temperature > 0:
                gen = step_generator(seed, len(prefixes[b]), 0, q.device)
                pick = torch.multinomial(q, 1, generator=gen)[:, 0]
            else:
                pick = q.argmax(-1)
            conf = q.gather(1, pick[:, None])[:, 0]
            if ids is not None:     # back to the target's ids: the distribution is zero off the scored ids
                pick = ids[pick]
                q = q.new_zeros(n, V).index_copy_(1, ids, q)
            out.append(Draft(pick, q, conf))
        self.calls += 1
        self.clock.stop(t0)
        return out

    def draft(self, prefix, gamma: int, seed: int = 0, sample: bool = False) -> Draft:
        return self.draft_batch([list(prefix)], [gamma], seed, sample)[0]

