"""Classic speculative decoding's drafter: a small autoregressive LM, one forward per drafted token.

It keeps its own KV cache across rounds; at each round the cache is cut back to the longest common
prefix with the committed text and the missing tokens are fed in one forward.
"""
from __future__ import annotations


import torch

from ..errors import ConfigError
from ..sampling.noise import step_generator
from .drafter import Draft
from .target import ARTarget


class ARDrafter:
    kind = "ar"

    def __init__(self, model: ARTarget, target_vocab: int, temperature: float = 0.0, stop_ids=()):
        self.model = model
        self.stop_ids = set(int(t) for t in stop_ids)
        self.target_vocab = int(target_vocab)
        self.temperature = float(temperature)
        self.state = None
        self.calls = 0
        self.seconds = 0.0

    @property
    def name(self):
        return self.model.name

    def reset(self):
        self.state = self.model.new_state()

    def _dist(self, logits: torch.Tensor, sample: bool) -> torch.Tensor:
        lg = logits.to(torch.float64)
        v = lg.shape[-1]
        if v > self.target_vocab:
            lg = lg[: self.target_vocab]
        elif v < self.target_vocab:
            lg = torch.cat([lg, lg.new_full((self.target_vocab - v,), float("-inf"))])
        t = self.temperature if sample and self.temperature > 0 else 1.0
        return torch.softmax(lg / t, dim=-1)

    @torch.no_grad()
    def draft(self, prefix, gamma: int, seed: int = 0, sample: bool = False) -> Draft:
        """Draft ``gamma`` tokens one target-style step at a time; sampled draws use noise keyed by
        (seed, prefix length), on the model's device."""
        if gamma < 1:
            raise ConfigError(f"draft length must be >= 1 (got {gamma})")
        if self.state is None:
            self.reset()
        st = self.state
        prefix = [int(t) for t in prefix]
        common = 0
        for a, b in zip(st.tokens, prefix[:-1]):
            if a != b:
                break
            common += 1
        st.crop(common)
        c0, s0 = self.model.calls, self.model.seconds
        logits = st.extend(prefix[common:])[-1]
        toks, qs, conf = [], [], []
        generator = step_generator(seed, len(prefix), 0, logits.device) if sample else None
        for i in range(gamma):
            p = self._dist(logits, sample)
            t = int(torch.multinomial(p, 1, generator=generator)[0]) if sample else int(p.argmax())
            toks.append(t)
            qs.append(p)
            conf.append(float(p[t]))
            if t in self.stop_ids:
                break   # nothing past an end of sequence is ever accepted
            if i + 1 < gamma:
                logits = st.extend([t])[-1]
        self.calls += self.model.calls - c0
        self.seconds += self.model.seconds - s0
        return Draft(toks, torch.stack(qs), torch.tensor(conf, dtype=torch.float64))
