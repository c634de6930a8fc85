"""A block-diffusion drafter network that reads an AR target's hidden states (the DFlash idea, our code).

One forward fills a block: the block's first slot holds the last committed token (the *anchor*), the others
hold a learned mask embedding (or tokens already known, when a branch is re-drafted). With ``shift`` (the
default) a slot's output predicts the token after it, the target's own convention, so the anchor's output is
the first drafted token; without it each mask slot predicts its own token, as in DFlash. Its context is the
target's own hidden states at the committed positions before the anchor — a few of the target's layers,
concatenated and projected to the drafter's width. Each drafter layer attends, bidirectionally within the
block, to its block and to keys/values computed from that projected context; the output goes through the
target's frozen LM head. Token embeddings and the head are the target's and are never stored with the
drafter: only the projection, the layers, the mask embedding and the norms are trained and shipped.

The per-layer context keys/values (:class:`ContextCache`) are extended as tokens are committed and cut back
like the target's own cache.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backends.core import block_forward
from ..backends.layers import RMSNorm, Rotary
from ..errors import ConfigError, ModelLoadError

MODEL_TYPE = "spiffy-block-drafter"
WEIGHTS = "drafter.safetensors"
SHORTLIST = "shortlist.json"
SHORTLIST_FORMAT = "spiffy-shortlist/1"


@dataclass
class BlockDrafterConfig:
    target: str                    # the target it was trained for (a name or path, for messages)
    target_hidden: int             # the target's hidden size
    target_num_layers: int         # the target's decoder layers
    vocab_size: int                # the target's vocabulary (its LM head's rows)
    target_layers: list = field(default_factory=list)   # target layers whose outputs are the context
    layers: int = 2
    block: int = 16                # the anchor + block-1 drafted tokens
    # shift: a slot's output predicts the token after it, as in the target's own head (the anchor's output
    # is the first draft; block-1 slots per block); else each mask slot predicts its own token (DFlash; block slots)
    shift: bool = True
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_heads: int = 9
    num_kv_heads: int = 3
    head_dim: int = 64
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    target_fingerprint: str = ""   # hash of the target's embedding and head (checked on load)

    @property
    def slots(self) -> int:
        """Slots in one drafter forward."""
        return self.block - 1 if self.shift else self.block

    @property
    def feature_dim(self) -> int:
        return self.target_hidden * len(self.target_layers)

    def to_dict(self) -> dict:
        return asdict(self)


class DrafterLayer(nn.Module):
    """One pre-norm block (the engine's :func:`~spiffy.backends.core.block_forward`) whose queries are the block's
    slots and whose keys/values are the context's, then the block's own."""

    def __init__(self, c: BlockDrafterConfig):
        super().__init__()
        self.c = c
        H, D = c.hidden_size, c.head_dim
        self.norm1 = RMSNorm(H, c.rms_eps)
        self.norm2 = RMSNorm(H, c.rms_eps)
        self.q = nn.Linear(H, c.num_heads * D, bias=False)
        self.k = nn.Linear(H, c.num_kv_heads * D, bias=False)
        self.v = nn.Linear(H, c.num_kv_heads * D, bias=False)
        self.o = nn.Linear(c.num_heads * D, H, bias=False)
        self.gate = nn.Linear(H, c.intermediate_size, bias=False)
        self.up = nn.Linear(H, c.intermediate_size, bias=False)
        self.down = nn.Linear(c.intermediate_size, H, bias=False)

    def context_kv(self, ctx: torch.Tensor, cos, sin):
        """Keys/values [B, kvh, C, D] of projected context features ``ctx`` [B, C, H] (rotary ``cos``/``sin``
        at their positions)."""
        B, C, _ = ctx.shape
        k = self.k(ctx).view(B, C, self.c.num_kv_heads, self.c.head_dim).transpose(1, 2)
        v = self.v(ctx).view(B, C, self.c.num_kv_heads, self.c.head_dim).transpose(1, 2)
        return Rotary.apply(k, cos, sin), v

    def forward(self, h, cos, sin, context_kv, mask):
        """``h`` [B, N, H] block slots; ``context_kv`` ([B or 1, kvh, C, D]) x 2; ``mask`` [B, 1, N, C+N]
        boolean (True = may attend) or None (everything)."""
        c = self.c
        return block_forward(h, cos, sin, mask, context_kv, attn_norm=self.norm1, q_proj=self.q, k_proj=self.k,
                             v_proj=self.v, o_proj=self.o, ff_norm=self.norm2, gate_proj=self.gate, up_proj=self.up,
                             down_proj=self.down, n_heads=c.num_heads, n_kv_heads=c.num_kv_heads)[0]


class BlockDrafterModel(nn.Module):
    """The trainable drafter. ``bind(embedding, head)`` attaches the target's frozen token embedding and LM
    head weights (not parameters of this module, never saved with it)."""

    def __init__(self, cfg: BlockDrafterConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.num_heads % cfg.num_kv_heads:
            raise ConfigError("drafter heads must be a multiple of its key/value heads")
        self.fc = nn.Linear(cfg.feature_dim, cfg.hidden_size, bias=False)
        self.ctx_norm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.mask_embedding = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.layers = nn.ModuleList(DrafterLayer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta)
        self._frozen: tuple = ()
        self.shortlist: Optional[list] = None    # token ids the runtime scores (spiffy.ar.block_drafter), if any

    def bind(self, embedding: torch.Tensor, head: torch.Tensor):
        if embedding.shape[-1] != self.cfg.hidden_size or head.shape != (self.cfg.vocab_size, self.cfg.hidden_size):
            raise ConfigError(f"drafter width {self.cfg.hidden_size} / vocabulary {self.cfg.vocab_size} do not fit the "
                              f"target's embedding {tuple(embedding.shape)} and head {tuple(head.shape)}")
        self._frozen = (embedding.detach(), head.detach())
        return self

    @property
    def embedding(self) -> torch.Tensor:
        if not self._frozen:
            raise RuntimeError("the drafter is not bound to a target: call bind(embedding, head)")
        return self._frozen[0]

    @property
    def head(self) -> torch.Tensor:
        return self._frozen[1]

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Target features [..., feature_dim] -> the context the layers read [..., hidden]."""
        return self.ctx_norm(self.fc(features.to(self.fc.weight.dtype)))

    def context_kv(self, ctx: torch.Tensor, pos: torch.Tensor) -> list:
        """Per-layer (keys, values) [B, kvh, C, D] of projected context ``ctx`` [B, C, H] at ``pos`` [B, C]."""
        cos, sin = self.rotary.cos_sin(pos, ctx.dtype)
        return [layer.context_kv(ctx, cos, sin) for layer in self.layers]

    def embed_block(self, tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Block slots [B, N]: the token's embedding, or the mask embedding where ``masked``."""
        e = F.embedding(tokens.clamp(min=0), self.embedding).to(self.mask_embedding.dtype)
        return torch.where(masked[..., None], self.mask_embedding.expand_as(e), e)

    def hidden(self, tokens, masked, pos, kv: list, mask=None) -> torch.Tensor:
        """Final hidden states [B, N, H] of block slots ``tokens``/``masked`` at ``pos`` over context ``kv``."""
        h = self.embed_block(tokens, masked)
        cos, sin = self.rotary.cos_sin(pos, h.dtype)
        for layer, ckv in zip(self.layers, kv):
            h = layer(h, cos, sin, ckv, mask)
        return self.norm(h)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.head.to(h.dtype))

    # ------------------------------------------------------------------ saving and loading
    def save(self, out_dir, dtype=torch.bfloat16, extra: Optional[dict] = None):
        """Write config.json and the trainable weights (``dtype``) into ``out_dir`` (the caller makes it atomic)."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().to(dtype).contiguous() for k, v in self.state_dict().items()}
        save_file(sd, str(out / WEIGHTS))
        cfg = {"model_type": MODEL_TYPE, **self.cfg.to_dict(), **(extra or {})}
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    @classmethod
    def load(cls, path, device="cpu", dtype=torch.float32) -> "BlockDrafterModel":
        from safetensors.torch import load_file

        p = Path(path)
        try:
            raw = json.loads((p / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{p}: not a block drafter (config.json unreadable: {e})") from None
        if raw.get("model_type") != MODEL_TYPE:
            raise ModelLoadError(f"{p}: model_type {raw.get('model_type')!r} is not {MODEL_TYPE!r}")
        known = BlockDrafterConfig.__dataclass_fields__
        model = cls(BlockDrafterConfig(**{k: v for k, v in raw.items() if k in known}))
        try:
            sd = load_file(str(p / WEIGHTS))
            model.load_state_dict({k: v.to(dtype) for k, v in sd.items()})
        except Exception as e:
            raise ModelLoadError(f"{p}: drafter weights could not be loaded: {type(e).__name__}: {e}") from None
        model.shortlist = read_shortlist(p / SHORTLIST, model.cfg.vocab_size)
        return model.to(device=device, dtype=dtype).eval()


def read_shortlist(path: Path, vocab_size: int) -> Optional[list]:
    """The ids of a drafter's ``shortlist.json`` ({"format": SHORTLIST_FORMAT, "ids": [...]}), or None without one."""
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        ids = [int(i) for i in raw["ids"]] if raw.get("format") == SHORTLIST_FORMAT else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ModelLoadError(f"{path}: unreadable shortlist ({type(e).__name__}: {e})") from None
    if ids is None or not ids or min(ids) < 0 or max(ids) >= vocab_size:
        raise ModelLoadError(f"{path}: not a shortlist of token ids in [0, {vocab_size}) (format {SHORTLIST_FORMAT!r})")
    return ids


def is_block_drafter(path) -> bool:
    cfg = Path(str(path)).expanduser() / "config.json"
    try:
        return json.loads(cfg.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def target_fingerprint(embedding: torch.Tensor, head: torch.Tensor) -> str:
    """A cheap hash of a target's embedding and head (a few strided rows), to refuse a drafter trained for
    another model with the same shapes."""
    import hashlib

    h = hashlib.sha256()
    for w in (embedding, head):
        rows = w.detach()[:: max(1, w.shape[0] // 64)].to(torch.float32).cpu()
        h.update(str(tuple(w.shape)).encode())
        h.update(rows.mul(1e4).round().to(torch.int64).numpy().tobytes())
    return h.hexdigest()[:16]
