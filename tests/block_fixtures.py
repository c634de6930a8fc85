"""A tiny feature-reading block drafter, trained for a few seconds on a tiny target's own greedy text so that
its drafts are accepted often but not always (random drafters almost never agree with a target)."""
from __future__ import annotations

import torch

from spiffy.ar.block_model import BlockDrafterConfig, BlockDrafterModel, target_fingerprint


def tiny_drafter_model(tgt, layers=(0, 1), block: int = 5, seed: int = 0, shift: bool = True) -> BlockDrafterModel:
    c = tgt.model.config
    emb = tgt.model.get_input_embeddings().weight
    head = tgt.model.get_output_embeddings().weight
    torch.manual_seed(seed)
    cfg = BlockDrafterConfig(target=tgt.name, target_hidden=c.hidden_size, target_num_layers=c.num_hidden_layers,
                             vocab_size=int(head.shape[0]), target_layers=list(layers), layers=1, block=block, shift=shift,
                             hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                             num_heads=c.num_attention_heads, num_kv_heads=c.num_key_value_heads,
                             head_dim=c.hidden_size // c.num_attention_heads, rope_theta=10000.0,
                             target_fingerprint=target_fingerprint(emb, head))
    m = BlockDrafterModel(cfg).to(tgt.dtype)
    m.bind(emb, head)
    return m


def greedy_rows(tgt, n: int, prompt_len: int, new: int, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    V = tgt.vocab_size
    rows = []
    with torch.no_grad():
        for _ in range(n):
            p = torch.randint(0, V - 4, (prompt_len,), generator=g).tolist()
            x = torch.tensor([p])
            for _ in range(new):
                x = torch.cat([x, tgt.model(x).logits[:, -1:].argmax(-1)], 1)
            rows.append({"source": "tiny", "id": str(len(rows)), "prompt": p, "answer": x[0, prompt_len:].tolist()})
    return rows


def trained_tiny_drafter(tgt, steps: int = 150, block: int = 5, seed: int = 0, shift: bool = True) -> BlockDrafterModel:
    from spiffy_train.block_drafter import block_loss, compute_features, make_batch

    m = tiny_drafter_model(tgt, block=block, seed=seed, shift=shift)
    rows = greedy_rows(tgt, 24, 6, 20, seed)
    feats = [f.to(tgt.dtype) for f in compute_features(tgt, (0, 1), rows, 8, log=lambda *_: None)]
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        picks = torch.randint(0, len(rows), (4,), generator=g).tolist()
        b = make_batch(rows, feats, picks, block, 4, 0.2, g, shift)
        b["ctx"] = b["ctx"].to(tgt.dtype)
        loss, _, _ = block_loss(m, b, 4.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()
