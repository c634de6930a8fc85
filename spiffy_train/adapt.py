"""Adapting a pretrained causal LM into a masked-diffusion LM with a LoRA adapter (recipe kind ``dllm-adapt``).

The base (a named model, e.g. SmolLM2-135M-Instruct) keeps its weights and its one-position logit shift;
attention becomes bidirectional (:mod:`spiffy.backends.llama_dlm`). Training is LLaDA's masked-diffusion
objective on chat rows (:mod:`spiffy_train.chat_data`) and, with probability ``text_prob`` per step, on
windows of plain text; a share of the chat rows uses block-structured masking. bf16 autocast on CPU and GPU.

Runs are resumable: every ``checkpoint_minutes`` and at the end the trainable tensors, the optimizer, the
step, the data and masking generators and the measured curve are written atomically to
``$SPIFFY_CACHE/train/<name>/state.pt``; the next ``spiffy train --recipe`` continues from there (``--restart``
discards it). Each run ends by exporting the adapter (``models/<name>``: config, adapter, training.json with
the curve, probe logits of the rebuilt model, decoded samples) as one atomic folder swap.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from spiffy.atomic import folder_in_place
from spiffy.errors import ArtifactError, ConfigError
from . import adapter_card, lora
from .objectives import block_forward_process, forward_process, llada_hidden

PROBE_FILE = "probe_logits.safetensors"


def recipe_key(recipe: dict) -> str:
    """What a saved state must match to be continued: everything but run-length and logging knobs."""
    skip = ("steps", "checkpoint_minutes", "log_every", "eval", "notes", "amp", "samples", "threads", "variant")
    keep = {k: v for k, v in recipe.items() if k not in skip}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def state_path(name: str) -> Path:
    from spiffy.named_models import cache_root

    return cache_root() / "train" / name / "state.pt"


def build_base(recipe: dict, device: str):
    """(model in float32 with the base weights, tokenizer, mask id) for the recipe's named base."""
    from spiffy.backends.adapter import load_base_weights, resolve_base
    from spiffy.backends.llama_dlm import LlamaDLMConfig, LlamaDLMModel
    from spiffy.backends.loader import load_tokenizer

    base = resolve_base(recipe["base"])
    raw = json.loads((base / "config.json").read_text())
    tok = load_tokenizer(base)
    mask_id = tok.convert_tokens_to_ids(recipe["mask_token"])
    if mask_id is None or mask_id == tok.unk_token_id:
        raise ConfigError(f"mask token {recipe['mask_token']!r} is not in {recipe['base']}'s vocabulary")
    rope = raw.get("rope_theta") or (raw.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    cfg = LlamaDLMConfig(vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"],
                         intermediate_size=raw["intermediate_size"], num_hidden_layers=raw["num_hidden_layers"],
                         num_attention_heads=raw["num_attention_heads"],
                         num_key_value_heads=raw.get("num_key_value_heads"),
                         max_position_embeddings=raw.get("max_position_embeddings", 8192), rope_theta=rope,
                         rms_norm_eps=raw.get("rms_norm_eps", 1e-5), tie_word_embeddings=True,
                         mask_token_id=mask_id, pad_token_id=tok.pad_token_id, bos_token_id=raw.get("bos_token_id"),
                         eos_token_id=tok.eos_token_id)
    if not raw.get("tie_word_embeddings", False):
        raise ConfigError(f"{recipe['base']} does not tie its embeddings; the llama_dlm adapter expects tied ones")
    model = LlamaDLMModel(cfg)
    model.load_state_dict({k: v.float() for k, v in load_base_weights(base).items()}, strict=True)
    return model.to(device), tok, mask_id


def hidden(model, ids, valid, mask_id):
    """Final-normed hidden states (``objectives.llada_hidden``), with the adapter's mask embedding."""
    return llada_hidden(model, ids, None if bool(valid.all()) else valid, x=lora.embed(model, ids, mask_id))


def shifted_loss(model, batch: dict, noisy, masked, p_mask, mask_id: int):
    """LLaDA's estimator with the logit shift: the hidden state at j-1 predicts the masked token at j; each
    term weighted 1/p and divided by its row's content length, the sum by the batch size. Also returns the
    masked-token accuracy and the count."""
    ids = batch["input_ids"]
    h = hidden(model, noisy, batch["valid"], mask_id)
    b, j = masked.nonzero(as_tuple=True)
    logits = lora.head(model, h[b, j - 1], mask_id)
    target = ids[b, j]
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    w = 1.0 / p_mask[b, j] / batch["content_len"][b].to(ce.dtype)
    loss = (ce * w).sum() / ids.shape[0]
    correct = (logits.argmax(-1) == target).sum()
    return loss, int(correct), int(target.numel()), float(ce.detach().sum())


def noise(batch: dict, mask_id: int, gen, eps: float, block_mask_prob: float, block: int):
    ids, noisable = batch["input_ids"], batch["noisable"]
    noisy, masked, p = forward_process(ids, mask_id, eps, gen, noisable)
    if block_mask_prob > 0:
        bn, bm, bp = block_forward_process(ids, mask_id, batch["answer_start"], batch["content_len"], block, eps,
                                           gen, noisable)
        rows = (torch.rand(ids.shape[0], generator=gen, device=ids.device) < block_mask_prob)[:, None]
        noisy, masked, p = torch.where(rows, bn, noisy), torch.where(rows, bm, masked), torch.where(rows, bp, p)
    return noisy, masked, p


@torch.no_grad()
def evaluate(model, rows: list, mask_id: int, pad_id: int, block: int, max_answer: int, device: str,
             autocast: bool, batch_size: int = 8) -> dict:
    """Held-out masked loss (per-row estimator, averaged over rows) and masked-token accuracy, with fixed
    masking: row i is masked at t = (i + 0.5) / n, from a fixed generator."""
    from .chat_data import chat_batch

    was = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(1234)
    n = len(rows)
    loss_sum, correct, count, ce_sum = 0.0, 0, 0, 0.0
    for s in range(0, n, batch_size):
        chunk = rows[s:s + batch_size]
        batch = {k: v.to(device) for k, v in chat_batch(chunk, pad_id, mask_id, block, max_answer).items()}
        t = torch.tensor([(i + 0.5) / n for i in range(s, s + len(chunk))], device=device)
        noisy, masked, p = forward_process(batch["input_ids"], mask_id, 1e-3, gen, batch["noisable"], t=t)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            loss, c, k, ce = shifted_loss(model, batch, noisy, masked, p, mask_id)
        loss_sum += float(loss) * len(chunk)
        correct, count, ce_sum = correct + c, count + k, ce_sum + ce
    model.train(was)
    return {"loss": round(loss_sum / n, 4), "masked_ce": round(ce_sum / max(count, 1), 4),
            "masked_acc": round(correct / max(count, 1), 4), "rows": n, "masked_tokens": count}


def lr_at(step: int, recipe: dict, anneal_after_warmup: bool = False) -> float:
    """Linear warm-up, then cosine to ``min_lr_ratio`` of the peak by the recipe's last step; the cosine
    runs over all steps, or (``anneal_after_warmup``, the block-drafter recipes) over the steps after warm-up."""
    lr, warm, steps = recipe["lr"], recipe.get("warmup", 0), recipe["steps"]
    if step < warm:
        return lr * (step + 1) / warm
    floor = recipe.get("min_lr_ratio", 0.1)
    if anneal_after_warmup:
        p = min(1.0, (step - warm) / max(1, steps - warm))
    else:
        p = min(step / max(steps, 1), 1.0)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def prepare_data(recipe: dict, tok, mask_id: int, data_dir: Path, seed: int):
    from .chat_data import ChatBatches, TextWindows, encode_chat
    from spiffy.datasets import read_jsonl
    from .data import gsm8k_rows, sft_pairs, source_texts, tokenize_stream

    eot = tok.eos_token_id
    block, max_answer, max_prompt = recipe["block_length"], recipe["answer_len"], recipe["max_prompt"]
    rows = encode_chat(tok, sft_pairs(data_dir, recipe["sources"], seed), eot, max_prompt, max_answer)
    chat = ChatBatches(rows, tok.pad_token_id, mask_id, block, max_answer, seed)
    text = None
    tcfg = recipe.get("text") or {}
    if tcfg.get("prob", 0) > 0:
        texts = []
        for name, spec in tcfg["sources"].items():
            texts += source_texts(data_dir, name, spec.get("max_chars"), seed)
        text = TextWindows(tokenize_stream(tok, texts, eot), tcfg["seq_len"], seed + 1)
    src = recipe["eval"].get("source", "gsm8k")
    if src == "gsm8k":   # GSM8K test: never trained on
        held = [(r["question"], r["answer"]) for r in gsm8k_rows(data_dir, "test")]
    else:                # a JSONL file of {"prompt", "answer"} (tests)
        held = [(r["prompt"], r["answer"]) for r in read_jsonl(Path(src) if Path(src).exists() else data_dir / src)]
    held = held[: recipe["eval"]["rows"]]
    eval_rows = encode_chat(tok, held, eot, max_prompt, max_answer)
    return chat, text, eval_rows, {"chat_rows": len(rows), "answer_tokens": int(sum(len(r.answer) for r in rows)),
                                   "text_tokens": int(len(text.stream)) if text else 0, "eval_rows": len(eval_rows)}


def train_adapter(recipe: dict, data_dir: Path, out_dir: Path, device: str, max_minutes: Optional[float],
                  restart: bool = False, log=print, max_steps: Optional[int] = None) -> dict:
    """Train (or continue training) the adapter; stop at the recipe's ``steps``, after ``max_minutes`` of this
    run, or at step ``max_steps``; then save the state and export."""
    t_run = time.time()
    seed = int(recipe.get("seed", 0))
    torch.manual_seed(seed)
    model, tok, mask_id = build_base(recipe, device)
    a = recipe["adapter"]
    trainable = lora.attach(model, a["rank"], a["alpha"], a["targets"], a.get("train_norms", True), seed)
    model.to(device).train()
    params = list(trainable.values())
    opt = torch.optim.AdamW(params, lr=recipe["lr"], betas=(0.9, 0.98), eps=1e-8,
                            weight_decay=recipe.get("weight_decay", 0.0))
    chat, text, eval_rows, info = prepare_data(recipe, tok, mask_id, data_dir, seed)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    pick = torch.Generator().manual_seed(seed + 2)   # chat or text for each step
    key = recipe_key(recipe)
    st = {"step": 0, "tokens": 0, "train_s": 0.0, "curve": [], "runs": []}
    sp = state_path(recipe["name"])
    if sp.exists() and not restart:
        try:
            saved = torch.load(sp, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ArtifactError(f"{sp} is not a readable training state ({type(e).__name__}: {e}); "
                                f"pass --restart to discard it") from None
        if saved["key"] != key:
            raise ConfigError(f"{sp} was saved by a different recipe (key {saved['key']} != {key}); "
                             f"pass --restart to discard it")
        lora.load_state(trainable, saved["trainable"])
        opt.load_state_dict(saved["opt"])
        chat.rng.bit_generator.state = saved["chat_rng"]
        if text is not None and saved.get("text_rng"):
            text.rng.bit_generator.state = saved["text_rng"]
        gen.set_state(saved["gen"])
        pick.set_state(saved["pick"])
        st = saved["progress"]
        log(f"continuing {recipe['name']} from step {st['step']} ({st['tokens']:,} tokens, "
            f"{st['train_s'] / 3600:.2f} h trained)")
    n_train = sum(p.numel() for p in params)
    autocast = recipe.get("amp", "bf16") == "bf16"
    dev_type = torch.device(device).type
    bs, accum = recipe["batch_size"], recipe.get("grad_accum", 1)
    run = {"start_step": st["step"], "device": device, "threads": torch.get_num_threads(), "started": time.time()}

    def save_state():
        from spiffy.atomic import atomic_write_bytes

        import io

        buf = io.BytesIO()
        torch.save({"key": key, "trainable": lora.export_state(trainable), "opt": opt.state_dict(),
                    "chat_rng": chat.rng.bit_generator.state,
                    "text_rng": text.rng.bit_generator.state if text is not None else None,
                    "gen": gen.get_state(), "pick": pick.get_state(), "progress": st}, buf)
        atomic_write_bytes(sp, buf.getvalue())

    def measure():
        ev = evaluate(model, eval_rows, mask_id, tok.pad_token_id, recipe["block_length"], recipe["answer_len"],
                      device, autocast)
        st["curve"].append({"step": st["step"], "tokens": st["tokens"], "train_h": round(st["train_s"] / 3600, 3),
                            **ev})
        log({"event": "eval", **st["curve"][-1]})

    if not st["curve"]:
        measure()   # the starting point: the causal model read bidirectionally, before any training
    last_ckpt = last_eval = time.time()
    deadline = None if max_minutes is None else t_run + 60 * max_minutes
    ema = None
    stop = recipe["steps"] if max_steps is None else min(recipe["steps"], max_steps)
    while st["step"] < stop and (deadline is None or time.time() < deadline):
        t0 = time.time()
        lr = lr_at(st["step"], recipe)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(accum):
            use_text = text is not None and float(torch.rand(1, generator=pick)) < recipe["text"]["prob"]
            src = text if use_text else chat
            batch = {k: v.to(device) for k, v in src.batch(bs).items()}
            noisy, masked, p = noise(batch, mask_id, gen, 1e-3, 0.0 if use_text else recipe.get("block_mask_prob", 0),
                                     recipe["block_length"])
            with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=autocast):
                loss, *_ = shifted_loss(model, batch, noisy, masked, p, mask_id)
            (loss / accum).backward()
            total += float(loss.detach()) / accum
            st["tokens"] += int(batch["input_ids"].numel())
        torch.nn.utils.clip_grad_norm_(params, recipe.get("clip", 1.0))
        opt.step()
        st["step"] += 1
        st["train_s"] += time.time() - t0
        ema = total if ema is None else 0.95 * ema + 0.05 * total
        if st["step"] % recipe.get("log_every", 10) == 0:
            log({"event": "step", "step": st["step"], "loss": round(total, 4), "ema": round(ema, 4),
                 "lr": round(lr, 7), "tokens": st["tokens"], "s_per_step": round(time.time() - t0, 2)})
        if time.time() - last_eval > 60 * recipe["eval"]["every_minutes"]:
            measure()
            last_eval = time.time()
        if time.time() - last_ckpt > 60 * recipe.get("checkpoint_minutes", 10):
            save_state()
            last_ckpt = time.time()
    if not st["curve"] or st["curve"][-1]["step"] != st["step"]:
        measure()
    run.update(end_step=st["step"], wall_min=round((time.time() - t_run) / 60, 2))
    run.pop("started")
    st["runs"].append(run)
    save_state()
    summary = {"name": recipe["name"], "base": recipe["base"], "trainable_params": n_train, **info,
               "step": st["step"], "tokens": st["tokens"], "train_hours": round(st["train_s"] / 3600, 3),
               "curve": st["curve"], "runs": st["runs"], "recipe": recipe}
    export(model, trainable, tok, mask_id, recipe, summary, out_dir, log)
    return summary


def export(model, trainable: dict, tok, mask_id: int, recipe: dict, summary: dict, out_dir: Path, log=print):
    """Write the adapter folder atomically; its probe logits come from the model the loader rebuilds."""
    from safetensors.torch import save_file

    from spiffy.atomic import atomic_write_json
    from spiffy.backends.adapter import ADAPTER_FILE, ADAPTER_KEY

    a = recipe["adapter"]
    with folder_in_place(out_dir) as tmp:
        cfg = model.config.to_dict()
        cfg[ADAPTER_KEY] = {"base": recipe["base"], "rank": a["rank"], "alpha": a["alpha"],
                            "targets": list(a["targets"]), "train_norms": a.get("train_norms", True),
                            "mask_token": recipe["mask_token"], "dtype": recipe.get("save_dtype", "bf16")}
        for k in ("architectures", "transformers_version", "_name_or_path", "dtype", "torch_dtype"):
            cfg.pop(k, None)
        cfg["architectures"] = ["LlamaDLMModel"]
        atomic_write_json(tmp / "config.json", cfg)
        dt = {"bf16": torch.bfloat16, "fp32": torch.float32}[recipe.get("save_dtype", "bf16")]
        save_file({k: v.to(dt).contiguous() for k, v in lora.export_state(trainable).items()}, str(tmp / ADAPTER_FILE))
        probe = probe_logits(tmp, tok, recipe)
        save_file({"logits": probe["logits"], "input_ids": probe["input_ids"]}, str(tmp / PROBE_FILE))
        summary["adapter_mb"] = round((tmp / ADAPTER_FILE).stat().st_size / 2 ** 20, 2)
        summary["samples"] = probe["samples"]
        atomic_write_json(tmp / "training.json", summary)
        adapter_card.write(tmp)
    log(f"exported {out_dir} ({summary['adapter_mb']} MB adapter)")


def probe_prompts(recipe: dict) -> list:
    return list(recipe.get("samples", {}).get("prompts", []))


@torch.no_grad()
def probe_logits(folder: Path, tok, recipe: dict) -> dict:
    """Rebuild the model from ``folder`` as users load it; logits of a fixed probe (a chat prompt followed
    by 32 masks) and greedy answers to the recipe's sample prompts."""
    from spiffy.backends.loader import load_backend
    from spiffy.errors import ModelLoadError
    from spiffy.generation import generate

    be = load_backend(str(folder), device="cpu", dtype="float32")
    first = (probe_prompts(recipe) or ["What is 12 times 7?"])[0]
    ids = be.encode_prompt(first) + [be.mask_id] * 32
    inp = torch.tensor([ids])
    logits = be.forward(inp).logits[0].float().contiguous()
    s = recipe.get("samples", {})
    try:   # the bundled reference dLLM answers the same prompts, for the card
        ref = load_backend(None, device="cpu", dtype="float32")
    except ModelLoadError:
        ref = None
    samples = []
    for p in probe_prompts(recipe):
        row = {"prompt": p}
        for key, model in (("answer", be), ("reference", ref)):
            if model is not None:
                r = generate(model, p, gen_length=s.get("gen_length", 128), block_length=recipe["block_length"],
                             early_stop=True)
                row[key] = model.decode(r.token_ids[0])
        if ref is not None:
            row["reference_name"] = ref.name
        samples.append(row)
    return {"logits": logits, "input_ids": inp, "samples": samples}
