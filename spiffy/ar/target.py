"""The autoregressive target (verifier): any transformers causal LM, with its KV cache.

:class:`ARTarget` wraps the model and the facts the decode loop needs (vocabulary size, stop ids,
tokenizer). :class:`TargetState` is one decoding session: a transformers ``DynamicCache`` holding the
keys/values of every committed token except the last one (the "pending" token, which is fed again at
the front of the next verification so its logits predict the first draft token). After a
verification the cache is cut back to the accepted path: ``crop`` for a chain, ``keep`` (a gather of
the accepted tree nodes' entries) for a tree.
"""
from __future__ import annotations

import inspect
from typing import Optional

import torch

from ..devices import to_device
from ..errors import ConfigError, ModelLoadError
from ..timing import ForwardClock
from .tree import node_depths


def _ids(v) -> list[int]:
    if v is None:
        return []
    if isinstance(v, (list, tuple, set)):
        return [int(x) for x in v]
    return [int(v)]


class ARTarget:
    """A causal LM used as verifier (or as a classic AR drafter)."""

    def __init__(self, model, tokenizer=None, name: str = "target", stop_ids=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        out = model.get_output_embeddings()
        self.vocab_size = int(out.weight.shape[0]) if out is not None else int(model.config.vocab_size)
        if stop_ids is None:
            gc = getattr(model, "generation_config", None)
            stop_ids = _ids(getattr(gc, "eos_token_id", None)) or _ids(getattr(model.config, "eos_token_id", None))
            if not stop_ids and tokenizer is not None and tokenizer.eos_token_id is not None:
                stop_ids = [tokenizer.eos_token_id]
        self.stop_ids = sorted(set(_ids(stop_ids)))
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.calls = 0
        self.clock = ForwardClock(next(model.parameters()).device)
        self.last_features: Optional[torch.Tensor] = None   # of the last run that asked for features

    @property
    def seconds(self) -> float:
        """Seconds inside forwards so far (CUDA events on a GPU, read here)."""
        return self.clock.total()

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @staticmethod
    def features_of(hidden_states, layers) -> torch.Tensor:
        """The outputs of target ``layers`` concatenated: ``hidden_states`` is transformers' tuple
        (embeddings, then each layer's output; the last entry has the final norm applied)."""
        return torch.cat([hidden_states[i + 1] for i in layers], dim=-1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def eos_id(self) -> Optional[int]:
        return self.stop_ids[0] if self.stop_ids else None

    def new_state(self, feature_layers=None) -> "TargetState":
        """A decoding session; with ``feature_layers`` it also keeps those layers' outputs at every cached
        token (what a feature-reading drafter consumes)."""
        return TargetState(self, feature_layers)

    def encode_prompt(self, text: str, chat: bool = True) -> list[int]:
        tok = self.tokenizer
        if tok is None:
            raise ConfigError(f"{self.name} has no tokenizer: pass token ids instead of text")
        if chat and getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                          tokenize=True)
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return list(ids)
        return tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        if self.tokenizer is None:
            return ""
        out = []
        for t in ids:
            if int(t) in self.stop_ids:
                break
            out.append(int(t))
        return self.tokenizer.decode(out, skip_special_tokens=True)

    @torch.no_grad()
    def run(self, input_ids: torch.Tensor, cache, position_ids=None, attention_mask=None,
            feature_layers=None) -> torch.Tensor:
        """One forward over ``input_ids`` [1, T] appended to ``cache``; returns logits [T, V]. With
        ``feature_layers``, those layers' outputs [T, F] are left in :attr:`last_features`."""
        t0 = self.clock.start()
        kw = {self._cache_kw: cache, "use_cache": True}
        if position_ids is not None:
            kw["position_ids"] = position_ids
        if attention_mask is not None:
            kw["attention_mask"] = attention_mask
        if feature_layers:
            kw["output_hidden_states"] = True
        out = self.model(input_ids=input_ids, **kw)
        self.last_features = self.features_of(out.hidden_states, feature_layers)[0] if feature_layers else None
        self.calls += 1
        self.clock.stop(t0)
        return out.logits[0]


class TargetState:
    """One decoding session of an :class:`ARTarget`: the cache and the tokens it holds."""

    def __init__(self, target: ARTarget, feature_layers=None):
        from transformers import DynamicCache

        self.target = target
        self.feature_layers = tuple(int(i) for i in feature_layers) if feature_layers else None
        try:
            self.cache = DynamicCache(config=target.model.config)
        except TypeError:
            self.cache = DynamicCache()
        self.tokens: list[int] = []   # tokens whose keys/values are in the cache, in order
        # the target's features at those tokens [length, F] when it keeps them (a feature-reading drafter)
        self.features: Optional[torch.Tensor] = None

    def _add_features(self):
        f = self.target.last_features
        if self.feature_layers:
            self.features = f if self.features is None else torch.cat([self.features, f])

    @property
    def length(self) -> int:
        return len(self.tokens)

    def _tensor(self, ids) -> torch.Tensor:
        return to_device(torch.tensor([list(ids)], dtype=torch.long), self.target.device)

    def extend(self, ids) -> torch.Tensor:
        """Append a causal chain of tokens; logits [len(ids), V]."""
        ids = [int(t) for t in ids]
        logits = self.target.run(self._tensor(ids), self.cache, feature_layers=self.feature_layers)
        self.tokens.extend(ids)
        self._add_features()
        return logits

    def extend_on_device(self, pending: int, draft: torch.Tensor) -> torch.Tensor:
        """Append ``pending`` and then ``draft`` [γ], token ids still on the device (nothing is read back):
        logits [1 + γ, V]. The ids join :attr:`tokens` when the caller has them (:meth:`note`)."""
        dev = self.target.device
        ids = torch.cat([to_device(torch.tensor([int(pending)], dtype=torch.long), dev), draft.to(dev)])
        logits = self.target.run(ids[None], self.cache, feature_layers=self.feature_layers)
        self._add_features()
        return logits

    def note(self, ids) -> None:
        """Record the ids of the last :meth:`extend_on_device` once they are on the host."""
        self.tokens.extend(int(t) for t in ids)

    def extend_tree(self, ids, parents) -> torch.Tensor:
        """Append a token tree: ``parents[j]`` is the index (into ``ids``) of node j's parent, or -1 for a
        child of the last cached token. Each node attends to the cache, its ancestors and itself, at
        position ``cache length + depth - 1``. Returns logits [len(ids), V]. The cache then holds every
        node; call :meth:`keep` with the accepted path."""
        n = len(ids)
        past = self.length
        dev, dt = self.target.device, self.target.dtype
        allow = torch.zeros(n, past + n, dtype=torch.bool, device=dev)
        allow[:, :past] = True
        depth = node_depths(parents)
        for j, p in enumerate(parents):
            allow[j, past + j] = True
            if p >= 0:
                allow[j, past:] |= allow[p, past:]
        mask = torch.zeros(1, 1, n, past + n, dtype=dt, device=dev)
        mask.masked_fill_(~allow[None, None], torch.finfo(dt).min)
        pos = to_device(torch.tensor([[past + d - 1 for d in depth]], dtype=torch.long), dev)
        logits = self.target.run(self._tensor(ids), self.cache, position_ids=pos, attention_mask=mask,
                                 feature_layers=self.feature_layers)
        self.tokens.extend(int(t) for t in ids)
        self._add_features()
        return logits

    def crop(self, length: int):
        """Keep the first ``length`` cached tokens."""
        if length < self.length:
            self.cache.crop(length - self.length)   # negative = tokens to drop (transformers 4.x and 5.x)
            del self.tokens[length:]
            if self.features is not None:
                self.features = self.features[:length]

    def keep(self, start: int, offsets):
        """Keep cached tokens [0, start) followed by those at ``start + o`` for each offset (in order)."""
        offsets = list(offsets)
        if offsets == list(range(len(offsets))):
            self.crop(start + len(offsets))
            return
        kept = list(range(start)) + [start + o for o in offsets]
        idx = to_device(torch.tensor(kept, dtype=torch.long), self.target.device)
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(-2, idx)
            layer.values = layer.values.index_select(-2, idx)
        self.tokens = [self.tokens[i] for i in kept]
        if self.features is not None:
            self.features = self.features.index_select(0, idx)


def load_causal_lm(path_or_id: str, device: str = "cpu", dtype=None, name: Optional[str] = None) -> ARTarget:
    """Load an ``AutoModelForCausalLM`` checkpoint (local directory or hub id) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..backends.loader import resolve_dtype, resolve_path
    from ..devices import check_device

    check_device(device)
    if path_or_id is None:
        raise ModelLoadError("no causal-LM target given")
    p = resolve_path(str(path_or_id))   # a local checkpoint, or a hub snapshot (clear error otherwise)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(p), dtype=torch_dtype)
    except Exception as e:
        raise ModelLoadError(f"causal LM {path_or_id!r} could not be loaded: {type(e).__name__}: {e}") from None
    try:
        tok = AutoTokenizer.from_pretrained(str(p))
    except Exception as e:
        raise ModelLoadError(f"the tokenizer of {path_or_id!r} could not be loaded: {type(e).__name__}: {e}") from None
    return ARTarget(model.to(device), tok, name=name or p.name or str(path_or_id))
