"""The training loop: recipe -> tokenizer -> model -> stages (pretrain, sft) -> checkpoint.

A recipe is JSON::

    {"name": ..., "kind": "dllm" | "ar", "seed": 0, "tokenizer": "models/tokenizer",
     "model": {...config kwargs...}, "save_dtype": "bf16", "threads": 2, "log_every": 20,
     "checkpoint_minutes": 5,
     "stages": [{"name": "pretrain", "type": "pretrain", "steps": N, "minutes": M, "batch_size": B,
                 "seq_len": L, "lr": 1e-3, "warmup": 100, "min_lr_ratio": 0.1,
                 "sources": {"python_stdlib": {"weight": 0.4, "max_chars": 4000000}, ...}},
                {"name": "sft", "type": "sft", "answer_len": 256, "max_prompt": 192,
                 "sources": {"gsm8k": 1, "mbpp": 2, "stdlib_functions": 3000},
                 "block_mask_prob": 0.0, "block_length": 32, ...}],
     "cuda": {...keys overriding the above when training on a GPU (bf16 autocast, larger sizes)...}}

Each stage stops at ``steps`` or at its share of the time budget, whichever comes first; the learning
rate follows warmup + cosine over progress = max(step / steps, elapsed / minutes), so a time-limited
run still anneals. All randomness (init, data order, masking) comes from seeded generators.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Optional

import torch

from .models import build_model, count_params, load_for_training, save_checkpoint
from .objectives import causal_lm_loss, diffusion_step_loss


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        elif k == "stages" and isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = [_merge(a, b) for a, b in zip(out[k], v)] + out[k][len(v):]
        else:
            out[k] = v
    return out


def load_recipe(path, device: str, variant: str = "auto") -> dict:
    """The recipe at ``path``. ``variant``: "base" ignores its ``cuda`` section; "cuda" applies it (on a
    CPU that is a dry run of the GPU plan; an error if the recipe has none); "auto" applies it when
    ``device`` is a GPU and the recipe has one."""
    if variant not in ("auto", "base", "cuda"):
        raise ValueError(f"recipe variant must be auto, base or cuda, not {variant!r}")
    r = json.loads(Path(path).read_text())
    if variant == "cuda" and "cuda" not in r:
        raise ValueError(f"{path} has no 'cuda' section")
    use = variant == "cuda" or (variant == "auto" and torch.device(device).type == "cuda" and "cuda" in r)
    if use:
        r = _merge(r, r["cuda"])
    r.pop("cuda", None)
    r["variant"] = "cuda" if use else "base"
    return r


def resolve_device(device: Optional[str]) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def device_name(device: str) -> str:
    """What trained the model, for the card: the GPU's name, or the CPU model and core count."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    import os

    from spiffy.bench.machine import cpu_model

    return f"{cpu_model()} ({os.cpu_count()} cores)"


class Logger:
    def __init__(self, path: Optional[Path]):
        self.f = open(path, "a", encoding="utf-8") if path else None

    def __call__(self, **rec):
        line = json.dumps(rec)
        print(line, flush=True)
        if self.f:
            self.f.write(line + "\n")
            self.f.flush()


def lr_at(progress: float, step: int, stage: dict) -> float:
    lr = stage.get("lr", 1e-3)
    warm = stage.get("warmup", 0)
    if step < warm:
        return lr * (step + 1) / warm
    floor = stage.get("min_lr_ratio", 0.1)
    p = min(max(progress, 0.0), 1.0)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def prepare_tokenizer(recipe: dict, data_dir, root: Path):
    from .tokenizer import load_tokenizer, train_tokenizer

    tp = Path(recipe.get("tokenizer", "models/tokenizer"))
    if not tp.is_absolute():
        tp = root / tp
    if not (tp / "tokenizer.json").exists():
        train_tokenizer(data_dir, tp, vocab_size=recipe.get("vocab_size", 8192))
    return load_tokenizer(tp)


def build_stage_data(stage: dict, tok, data_dir, seed: int):
    from .data import PackedMixture, SFTBatches, encode_sft, sft_pairs, source_texts, tokenize_stream

    eos = tok.eos_token_id
    if stage.get("type", stage["name"]) == "pretrain":
        streams, weights = {}, {}
        for name, spec in stage["sources"].items():
            texts = source_texts(data_dir, name, spec.get("max_chars"), seed)
            streams[name] = tokenize_stream(tok, texts, eos)
            weights[name] = spec.get("weight", 1.0)
        return PackedMixture(streams, weights, stage["seq_len"], seed), {"tokens_available": {
            n: int(len(s)) for n, s in streams.items()}}
    pairs = sft_pairs(data_dir, stage["sources"], seed)
    rows = encode_sft(tok, pairs, eos, stage.get("max_prompt", 192), stage.get("answer_len", 256))
    info = {"sft_rows": len(rows), "sft_pairs": len(pairs),
            "answer_tokens": int(sum(len(r.answer) for r in rows)),
            "prompt_tokens": int(sum(len(r.prompt) for r in rows))}
    return SFTBatches(rows, stage.get("answer_len", 256), tok.pad_token_id, eos, seed), info


def train(recipe_path, data_dir=None, out: Optional[str] = None, max_minutes: Optional[float] = None,
          device: Optional[str] = None, log_path: Optional[str] = None, root: Optional[Path] = None,
          recipe: Optional[dict] = None, resume_from: Optional[str] = None,
          start_stage: Optional[str] = None, variant: str = "auto") -> dict:
    """Run a recipe. ``resume_from`` + ``start_stage``: load the weights a previous run of the same recipe
    saved in ``resume_from`` (its training.json must list every stage before ``start_stage``), skip those
    stages and run the rest; the summary carries the earlier stages' records over, marked ``resumed``."""
    from spiffy.datasets import resolve_data_dir

    t_run = time.time()  # ``max_minutes`` counts from here: data preparation included
    root = Path(root) if root else Path.cwd()
    device = resolve_device(device)
    recipe = recipe if recipe is not None else load_recipe(recipe_path, device, variant)
    data_dir = resolve_data_dir(data_dir)
    out_dir = Path(out or recipe.get("out") or (root / "models" / recipe["name"]))
    seed = int(recipe.get("seed", 0))
    if torch.device(device).type == "cpu" and recipe.get("threads"):
        torch.set_num_threads(int(recipe["threads"]))
    torch.manual_seed(seed)
    log = Logger(Path(log_path) if log_path else None)
    tok = prepare_tokenizer(recipe, data_dir, root)
    kind = recipe["kind"]
    stages = recipe["stages"]
    carried = []
    if start_stage is not None:
        names = [s["name"] for s in stages]
        if start_stage not in names:
            raise ValueError(f"start stage {start_stage!r} is not in the recipe (stages: {names})")
        if not resume_from:
            raise ValueError("start_stage needs resume_from: the checkpoint the earlier stages produced")
        prev = json.loads((Path(resume_from) / "training.json").read_text())
        done = {s["name"]: s for s in prev.get("stages", [])}
        k = names.index(start_stage)
        missing = [n for n in names[:k] if n not in done]
        if missing:
            raise ValueError(f"{resume_from} has no record of stage(s) {missing}; cannot start at {start_stage!r}")
        carried = [dict(done[n], resumed=True) for n in names[:k]]
        carried_wall = prev.get("wall_min", sum(c.get("wall_min", 0) for c in carried))
        stages = stages[k:]
        recipe = dict(recipe, init_from=str(resume_from))
    if recipe.get("init_from"):  # continue training a saved checkpoint (weights loaded in float32)
        init = Path(recipe["init_from"])
        init = init if init.is_absolute() else root / init
        model = load_for_training(kind, init).to(device)
    else:
        model = build_model(kind, recipe["model"], tok).to(device)
    model.train()
    n_params = count_params(model)
    autocast = torch.device(device).type == "cuda" and recipe.get("amp", "bf16") == "bf16"
    log(event="start", name=recipe["name"], kind=kind, params=n_params, device=device, out=str(out_dir),
        start_stage=start_stage)
    mask_id = getattr(model.config, "mask_token_id", None)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    summary = {"name": recipe["name"], "kind": kind, "params": n_params, "device": device,
               "device_name": device_name(device), "torch_version": torch.__version__,
               "torch_threads": torch.get_num_threads(), "seed": seed, "stages": list(carried)}
    last_ckpt = time.time()
    for i, stage in enumerate(stages):
        data, info = build_stage_data(stage, tok, data_dir, seed + 100 * (len(carried) + i))
        minutes = stage.get("minutes", None)
        if minutes is not None and max_minutes is not None:
            # the wall budget includes data preparation: shrink this and the later stages to what is left
            left = max_minutes - (time.time() - t_run) / 60
            later = sum(s.get("minutes", 0) for s in stages[i:])
            minutes = max(0.0, minutes * min(1.0, left / later)) if later else minutes
        steps = int(stage.get("steps", 10 ** 9))
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": stage.get("weight_decay", 0.1)},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=stage.get("lr", 1e-3), betas=(0.9, 0.95), eps=1e-8)
        bs = stage["batch_size"]
        accum = int(stage.get("grad_accum", 1))
        t0 = time.time()
        step, tokens, ema = 0, 0, None
        history = []
        log(event="stage", stage=stage["name"], minutes=minutes, steps=steps, **info)
        while step < steps:
            elapsed = (time.time() - t0) / 60
            if minutes is not None and elapsed >= minutes:
                break
            progress = max(step / steps, elapsed / minutes if minutes else 0.0)
            lr = lr_at(progress, step, stage)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for _ in range(accum):
                batch = {k: v.to(device) for k, v in (data.batch(bs) if stage.get("type", stage["name"]) != "pretrain"
                                                      else {"input_ids": data.batch(bs)}).items()}
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    if kind == "dllm":
                        loss = diffusion_step_loss(model, batch, mask_id, stage.get("eps", 1e-3), gen,
                                                   stage.get("block_mask_prob", 0.0), stage.get("block_length", 32))
                    else:
                        loss = causal_lm_loss(model, batch)
                (loss / accum).backward()
                loss_sum += float(loss.detach()) / accum
                tokens += batch["input_ids"].numel()
            torch.nn.utils.clip_grad_norm_(model.parameters(), stage.get("clip", 1.0))
            opt.step()
            step += 1
            ema = loss_sum if ema is None else 0.98 * ema + 0.02 * loss_sum
            if step % recipe.get("log_every", 20) == 0 or step == 1:
                el = time.time() - t0
                history.append([step, round(loss_sum, 4)])
                log(event="step", stage=stage["name"], step=step, loss=round(loss_sum, 4), ema=round(ema, 4),
                    lr=round(lr, 6), tokens=tokens, tok_per_s=round(tokens / max(el, 1e-9), 1),
                    elapsed_min=round(el / 60, 2))
            if time.time() - last_ckpt > 60 * recipe.get("checkpoint_minutes", 5):
                save_checkpoint(model, tok, out_dir, recipe.get("save_dtype", "bf16"))
                last_ckpt = time.time()
                log(event="checkpoint", stage=stage["name"], step=step)
        rec = {"name": stage["name"], "steps": step, "tokens": tokens, "batch_size": bs * accum,
               "wall_min": round((time.time() - t0) / 60, 2), "final_loss_ema": ema, **info}
        log(event="stage_end", **rec)
        rec["loss_history"] = history
        summary["stages"].append(rec)
        save_checkpoint(model, tok, out_dir, recipe.get("save_dtype", "bf16"))
        last_ckpt = time.time()
    summary["wall_min"] = round((time.time() - t_run) / 60, 2)
    if carried:
        summary["resumed_from"] = str(resume_from)
        summary["wall_min_this_run"] = summary["wall_min"]
        summary["wall_min"] = round(summary["wall_min"] + carried_wall, 2)
    summary["recipe"] = recipe
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2))
    log(event="done", out=str(out_dir), wall_min=summary["wall_min"])
    return summary
