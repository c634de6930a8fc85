"""Training a feature-reading block drafter for an AR target (recipe kind ``block-drafter``).

Data: the target's own greedy answers (:mod:`spiffy_train.target_answers`), and the target's features (the
outputs of the recipe's ``target_layers``) at every position of prompt + answer, computed once by
teacher-forced forwards and kept in the training cache (``$SPIFFY_CACHE/train/<name>/``). A held-out split
of the answers measures acceptance.

Each step: for every row of a batch, ``anchors`` random anchor positions in the answer; each anchor opens a
block (the anchor's token, then mask slots; sometimes the first few slots revealed, so that re-drafting a
branch with known tokens is in the training distribution) that reads the context features of the
positions before the anchor. All blocks of a row share one forward through an attention mask. Loss: cross
entropy of the target's token at each masked slot, weighted by exp(-(slot-1)/position_decay) (the first
slots decide acceptance). The drafter starts from the target's own last decoder layers.

Held-out acceptance: for anchors across the held-out answers, the number of leading block tokens that
equal the target's greedy continuation — exactly what greedy verification accepts in a round (the context
features being the target's own).
"""
from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from spiffy.ar.block_model import BlockDrafterConfig, BlockDrafterModel, target_fingerprint
from spiffy.errors import ArtifactError, ConfigError

from .adapt import lr_at, recipe_key, state_path
from .target_answers import generate_answers, training_prompts


def drafter_config(recipe: dict, target) -> BlockDrafterConfig:
    c = target.model.config
    d = recipe["drafter"]
    emb = target.model.get_input_embeddings().weight
    head = target.model.get_output_embeddings().weight
    rope = getattr(c, "rope_parameters", None) or {}
    theta = float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0)))
    layers = [int(i) for i in d["target_layers"]]
    if not layers or max(layers) >= c.num_hidden_layers or min(layers) < 0:
        raise ConfigError(f"target_layers {layers} must name layers of the target's {c.num_hidden_layers}")
    return BlockDrafterConfig(
        target=recipe["target"], target_hidden=c.hidden_size, target_num_layers=c.num_hidden_layers,
        vocab_size=int(head.shape[0]), target_layers=layers, layers=int(d["layers"]), block=int(d["block"]),
        shift=bool(d.get("shift", True)),
        hidden_size=c.hidden_size, intermediate_size=c.intermediate_size, num_heads=c.num_attention_heads,
        num_kv_heads=c.num_key_value_heads, head_dim=getattr(c, "head_dim", c.hidden_size // c.num_attention_heads),
        rope_theta=theta, rms_eps=float(c.rms_norm_eps), target_fingerprint=target_fingerprint(emb, head))


def init_from_target(model: BlockDrafterModel, target) -> None:
    """Start the drafter's layers from the target's last decoder layers; the context projection passes the
    last feature layer through; the mask slot starts at the mean token embedding."""
    src = target.model.model.layers[-len(model.layers):]
    names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
             "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
             "norm1": "input_layernorm", "norm2": "post_attention_layernorm"}
    with torch.no_grad():
        for mine, theirs in zip(model.layers, src):
            tsd = theirs.state_dict()
            for a, b in names.items():
                getattr(mine, a).weight.copy_(tsd[b + ".weight"])
        model.norm.weight.copy_(target.model.model.norm.weight)
        H = model.cfg.hidden_size
        model.fc.weight.normal_(0, 0.02 / math.sqrt(len(model.cfg.target_layers)))
        model.fc.weight[:, -H:] += torch.eye(H)
        model.mask_embedding.copy_(model.embedding.mean(0))


@torch.no_grad()
def compute_features(target, layers, rows: list, batch: int, log=print) -> list:
    """The target's features at every position of prompt + answer, per row (bf16 to halve the memory).
    Rows of a batch are right-padded: the target is causal, so padding after a row changes nothing in it."""
    feats = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["prompt"]) + len(rows[i]["answer"]))
    dev = target.device
    t0 = time.time()
    for s in range(0, len(order), batch):
        idx = order[s: s + batch]
        seqs = [rows[i]["prompt"] + rows[i]["answer"] for i in idx]
        T = max(len(x) for x in seqs)
        x = torch.zeros(len(seqs), T, dtype=torch.long)
        att = torch.zeros(len(seqs), T, dtype=torch.long)
        for j, q in enumerate(seqs):
            x[j, : len(q)] = torch.tensor(q)
            att[j, : len(q)] = 1
        out = target.model(input_ids=x.to(dev), attention_mask=att.to(dev), output_hidden_states=True, use_cache=False)
        f = target.features_of(out.hidden_states, layers)
        for j, i in enumerate(idx):
            feats[i] = f[j, : len(seqs[j])].to(torch.bfloat16).cpu()
        if (s // batch) % 20 == 0:
            log(f"features: {s + len(idx)}/{len(rows)} rows in {time.time() - t0:.0f} s")
    return feats


def make_batch(rows: list, feats: list, picks: list, block: int, anchors: int, reveal_prob: float, gen,
               shift: bool = True) -> dict:
    """Tensors for one step: context features, block slots, attention mask, labels and slot weights. ``slot``
    holds each labelled slot's draft index (1 = the first drafted token), which sets its loss weight."""
    B = len(picks)
    S = block - 1 if shift else block          # slots per block
    n = anchors * S
    T = max(len(rows[i]["prompt"]) + len(rows[i]["answer"]) for i in picks)
    F_ = feats[picks[0]].shape[1]
    ctx = torch.zeros(B, T, F_)
    toks = torch.zeros(B, n, dtype=torch.long)
    masked = torch.ones(B, n, dtype=torch.bool)
    pos = torch.zeros(B, n, dtype=torch.long)
    labels = torch.full((B, n), -100, dtype=torch.long)
    slot = torch.zeros(B, n, dtype=torch.long)
    allow = torch.zeros(B, 1, n, T + n, dtype=torch.bool)
    blk = torch.arange(n) // S
    allow[:, 0, :, T:] = blk[:, None] == blk[None, :]
    j_in = torch.arange(S)
    for b, i in enumerate(picks):
        r = rows[i]
        seq = torch.tensor(r["prompt"] + r["answer"])
        L, P = len(seq), len(r["prompt"])
        ctx[b, :L] = feats[i].float()
        a = torch.randint(P - 1, L - 1, (anchors,), generator=gen)      # anchor: the pending token
        reveal = torch.where(torch.rand(anchors, generator=gen) < reveal_prob,
                             torch.randint(1, block - 2, (anchors,), generator=gen), torch.zeros(anchors, dtype=torch.long))
        for j in range(anchors):
            s = slice(j * S, (j + 1) * S)
            p = a[j] + j_in
            known = j_in <= reveal[j]
            toks[b, s] = torch.where(p < L, seq[p.clamp(max=L - 1)], 0)
            masked[b, s] = ~known
            pos[b, s] = p
            tgt = p + 1 if shift else p                          # the position each slot's output predicts
            first = reveal[j] + 1                                # the first drafted position (relative to a)
            want = (tgt < L) & (tgt - a[j] >= first)
            labels[b, s] = torch.where(want, seq[tgt.clamp(max=L - 1)], -100)
            slot[b, s] = (tgt - a[j] - first + 1).clamp(min=1)
            allow[b, 0, s, : a[j]] = True
    return {"ctx": ctx, "ctx_pos": torch.arange(T)[None].expand(B, -1), "tokens": toks, "masked": masked,
            "pos": pos, "labels": labels, "slot": slot, "allow": allow}


def block_loss(model: BlockDrafterModel, batch: dict, decay: float) -> tuple:
    kv = model.context_kv(model.project(batch["ctx"]), batch["ctx_pos"])
    h = model.hidden(batch["tokens"], batch["masked"], batch["pos"], kv, batch["allow"])
    sel = batch["labels"] >= 0
    logits = model.logits(h[sel])
    w = torch.exp(-(batch["slot"][sel].float() - 1) / decay)
    ce = F.cross_entropy(logits.float(), batch["labels"][sel], reduction="none")
    acc = (logits.argmax(-1) == batch["labels"][sel]).float().mean()
    return (ce * w).sum() / w.sum(), float(acc), int(sel.sum())


@torch.no_grad()
def heldout_acceptance(model: BlockDrafterModel, rows: list, feats: list, every: int = 8) -> dict:
    """Mean tokens accepted per block (greedy) over anchors every ``every`` positions of held-out answers,
    and the rate of acceptance by drafted slot."""
    block, S, shift = model.cfg.block, model.cfg.slots, model.cfg.shift
    runs, by_slot = [], torch.zeros(block - 1)
    for r, f in zip(rows, feats):
        seq = torch.tensor(r["prompt"] + r["answer"])
        L, P = len(seq), len(r["prompt"])
        anchors = list(range(P - 1, L - 1, every))
        if not anchors:
            continue
        n = len(anchors)
        toks = torch.zeros(1, n * S, dtype=torch.long)
        masked = torch.ones(1, n * S, dtype=torch.bool)
        pos = torch.zeros(1, n * S, dtype=torch.long)
        allow = torch.zeros(1, 1, n * S, L + n * S, dtype=torch.bool)
        blk = torch.arange(n * S) // S
        allow[0, 0, :, L:] = blk[:, None] == blk[None, :]
        for j, a in enumerate(anchors):
            s = slice(j * S, (j + 1) * S)
            toks[0, j * S] = seq[a]
            masked[0, j * S] = False
            pos[0, s] = a + torch.arange(S)
            allow[0, 0, s, :a] = True
        kv = model.context_kv(model.project(f.float()[None]), torch.arange(L)[None])
        pred = model.logits(model.hidden(toks, masked, pos, kv, allow)).argmax(-1)[0].view(n, S)
        pred = pred if shift else pred[:, 1:]
        for j, a in enumerate(anchors):
            want = seq[a + 1: a + block]
            k = 0
            while k < len(want) and int(pred[j, k]) == int(want[k]):
                k += 1
            runs.append(k)
            by_slot[:k] += 1
    n = max(1, len(runs))
    return {"accepted_per_block": round(sum(runs) / n, 3), "tokens_per_call": round(1 + sum(runs) / n, 3),
            "accept_by_slot": [round(float(x) / n, 3) for x in by_slot], "blocks": len(runs)}


def load_target(recipe: dict, device: str):
    from spiffy.ar.target import load_causal_lm

    return load_causal_lm(recipe["target"], device=device, dtype="float32")


def prepare(recipe: dict, target, data_dir: Path, log=print) -> tuple:
    """(train rows, train features, held-out rows, held-out features, data info)."""
    a = recipe["answers"]
    cache = state_path(recipe["name"]).parent
    cache.mkdir(parents=True, exist_ok=True)
    prompts = training_prompts(data_dir, a["sources"], int(recipe.get("seed", 0)))
    rows = generate_answers(target.model, target.tokenizer, prompts, cache / "answers.jsonl", a["max_prompt"],
                            a["max_new_tokens"], a["batch"], target.stop_ids, log)
    rows = [r for r in rows if len(r["answer"]) >= 2]
    layers = tuple(recipe["drafter"]["target_layers"])
    fpath = cache / f"features-{'-'.join(map(str, layers))}.pt"
    ids = [r["id"] for r in rows]
    feats = None
    if fpath.exists():
        saved = torch.load(fpath, map_location="cpu", weights_only=False)
        if saved.get("ids") == ids:
            feats = saved["features"]
    if feats is None:
        feats = compute_features(target, layers, rows, int(recipe.get("feature_batch", 8)), log)
        from spiffy.atomic import atomic_write_bytes

        buf = io.BytesIO()
        torch.save({"ids": ids, "features": feats}, buf)
        atomic_write_bytes(fpath, buf.getvalue())
    h = int(a.get("heldout", 0))
    if h < 1 or h >= len(rows):
        raise ConfigError(f"answers.heldout must be between 1 and {len(rows) - 1} (got {h})")
    info = {"answers": len(rows), "train_rows": len(rows) - h, "heldout_rows": h,
            "answer_tokens": sum(len(r["answer"]) for r in rows[:-h]),
            "by_source": {s: sum(1 for r in rows[:-h] if r["source"] == s) for s in a["sources"]}}
    return rows[:-h], feats[:-h], rows[-h:], feats[-h:], info


def train_block_drafter(recipe: dict, data_dir: Path, out_dir: Path, device: str, max_minutes: Optional[float],
                        restart: bool = False, log=print, max_steps: Optional[int] = None) -> dict:
    """Train (or continue) the drafter; stop at the recipe's ``steps``, after ``max_minutes`` or at ``max_steps``;
    save the state and export ``out_dir``."""
    t_run = time.time()
    seed = int(recipe.get("seed", 0))
    torch.manual_seed(seed)
    target = load_target(recipe, device)
    train, train_f, held, held_f, info = prepare(recipe, target, data_dir, log)
    cfg = drafter_config(recipe, target)
    model = BlockDrafterModel(cfg)
    model.bind(target.model.get_input_embeddings().weight, target.model.get_output_embeddings().weight)
    init_from_target(model, target)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe["lr"], betas=(0.9, 0.95), weight_decay=recipe.get("weight_decay", 0.0))
    gen = torch.Generator().manual_seed(seed + 1)
    key = recipe_key(recipe)
    st = {"step": 0, "tokens": 0, "train_s": 0.0, "curve": [], "runs": []}
    sp = state_path(recipe["name"])
    if sp.exists() and not restart:
        try:
            saved = torch.load(sp, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ArtifactError(f"{sp} is not a readable training state ({type(e).__name__}: {e}); "
                                "pass --restart to discard it") from None
        if saved["key"] != key:
            raise ConfigError(f"{sp} was saved by a different recipe (key {saved['key']} != {key}); "
                              "pass --restart to discard it")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["gen"])
        st = saved["progress"]
        log(f"continuing {recipe['name']} from step {st['step']} ({st['train_s'] / 3600:.2f} h trained)")
    run = {"start_step": st["step"], "device": device, "threads": torch.get_num_threads(), "started": time.time()}

    def save_state():
        from spiffy.atomic import atomic_write_bytes

        buf = io.BytesIO()
        torch.save({"key": key, "model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                    "progress": st}, buf)
        atomic_write_bytes(sp, buf.getvalue())

    def measure():
        model.eval()
        ev = heldout_acceptance(model, held, held_f)
        model.train()
        st["curve"].append({"step": st["step"], "tokens": st["tokens"], "train_h": round(st["train_s"] / 3600, 3),
                            **ev})
        log(f"eval step {st['step']}: {ev['tokens_per_call']} tokens per target call (held-out, greedy), "
            f"slot acceptance {ev['accept_by_slot'][:6]}")

    if not st["curve"]:
        measure()
    last_ckpt = last_eval = time.time()
    deadline = None if max_minutes is None else t_run + 60 * max_minutes
    stop = recipe["steps"] if max_steps is None else min(recipe["steps"], max_steps)
    bs, anchors = int(recipe["batch_size"]), int(recipe["anchors"])
    ema = None
    while st["step"] < stop and (deadline is None or time.time() < deadline):
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(st["step"], recipe, anneal_after_warmup=True)
        picks = torch.randint(0, len(train), (bs,), generator=gen).tolist()
        batch = make_batch(train, train_f, picks, cfg.block, anchors, float(recipe.get("reveal_prob", 0.2)), gen,
                           cfg.shift)
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, acc, n = block_loss(model, batch, float(recipe.get("position_decay", 7.0)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.get("clip", 1.0))
        opt.step()
        st["step"] += 1
        st["tokens"] += n
        st["train_s"] += time.time() - t0
        lv = float(loss.detach())
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        if st["step"] % recipe.get("log_every", 20) == 0:
            log(f"step {st['step']}: loss {ema:.3f} acc {acc:.3f} ({time.time() - t0:.2f} s/step)")
        if time.time() - last_eval > 60 * recipe["eval"]["every_minutes"]:
            measure()
            last_eval = time.time()
        if time.time() - last_ckpt > 60 * recipe.get("checkpoint_minutes", 5):
            save_state()
            last_ckpt = time.time()
    if st["curve"][-1]["step"] != st["step"]:
        measure()
    run.update(end_step=st["step"], wall_min=round((time.time() - run["started"]) / 60, 1))
    st["runs"].append(run)
    save_state()
    summary = {"name": recipe["name"], "target": recipe["target"], "trainable_params": sum(p.numel() for p in params),
               **info, "step": st["step"], "tokens": st["tokens"], "train_hours": round(st["train_s"] / 3600, 3),
               "curve": st["curve"], "runs": st["runs"], "recipe": recipe}
    export(model, recipe, summary, out_dir, log)
    return summary


def export(model: BlockDrafterModel, recipe: dict, summary: dict, out_dir: Path, log=print):
    """Write the drafter folder atomically: config.json, the trainable weights, training.json and the card."""
    from spiffy.atomic import atomic_write_json, folder_in_place

    from . import drafter_card

    with folder_in_place(out_dir) as tmp:
        dt = {"bf16": torch.bfloat16, "fp32": torch.float32}[recipe.get("save_dtype", "bf16")]
        model.save(tmp, dtype=dt, extra={"recipe": recipe["name"]})
        summary["drafter_mb"] = round(sum(f.stat().st_size for f in tmp.glob("*.safetensors")) / 2 ** 20, 2)
        atomic_write_json(tmp / "training.json", summary)
        drafter_card.write(tmp)
    log(f"exported {out_dir} ({summary['drafter_mb']} MB)")
