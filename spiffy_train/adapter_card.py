"""The model card of an adapter checkpoint (``models/<name>/README.md``), generated from its training.json:
what was trained on what, the measured held-out curve, and answers beside the reference dLLM's."""
from __future__ import annotations

import json
from pathlib import Path


def _curve_table(curve: list) -> list:
    rows = ["| step | tokens trained | hours | held-out masked loss | masked CE / token | masked-token accuracy |",
            "|---|---|---|---|---|---|"]
    for c in curve:
        rows.append(f"| {c['step']} | {c['tokens']:,} | {c['train_h']:.2f} | {c['loss']:.3f} | {c['masked_ce']:.3f} | "
                    f"{100 * c['masked_acc']:.1f}% |")
    return rows


def _quote(text: str) -> str:
    text = (text or "").strip() or "(empty)"
    return "```\n" + text.replace("```", "ʼʼʼ") + "\n```"


def render(tr: dict) -> str:
    r = tr["recipe"]
    a = r["adapter"]
    runs = tr.get("runs", [])
    src = r.get("eval", {}).get("source", "gsm8k")
    held = "GSM8K test (never trained on)" if src == "gsm8k" else f"`{Path(src).name}`"
    dev = ", ".join(sorted({f"{x['device']} ({x['threads']} threads)" for x in runs})) or "?"
    out = [f"# {tr['name']}",
           "",
           f"A masked-diffusion LM adapted from **{tr['base']}** (the causal model, made bidirectional, with its "
           "one-position logit shift kept) by a LoRA adapter trained in this repository. Only the adapter ships "
           f"here ({tr.get('adapter_mb', '?')} MB); loading takes the base weights from `spiffy models fetch "
           f"{tr['base']}` and merges them (`spiffy.backends.adapter`).",
           "",
           "**Generated from measured JSON (training.json); a small model trained briefly on a 2-core CPU: expect "
           "weak, often wrong answers.**",
           "",
           "```bash",
           f"spiffy models fetch {tr['base']}",
           f"spiffy sample --model models/{tr['name']} --prompt \"...\"",
           f"spiffy train --recipe models/recipes/{tr['name']}.json --max-minutes 90   # continues the saved state",
           "```",
           "",
           "## Training",
           "",
           f"- Adapter: LoRA rank {a['rank']}, alpha {a['alpha']} on {', '.join(a['targets'])}; norm weights "
           f"{'trained in full' if a.get('train_norms', True) else 'frozen'}; a trained delta on the mask token's "
           f"tied embedding row (mask token `{r['mask_token']}`). {tr['trainable_params']:,} trainable parameters.",
           f"- Data: {tr['chat_rows']:,} chat rows ({tr['answer_tokens']:,} answer tokens; sources "
           f"{', '.join(f'{k} ({v})' for k, v in r['sources'].items())}, in the base's chat template)"
           + (f" and, on {100 * r['text']['prob']:.0f}% of steps, windows of a {tr['text_tokens']:,}-token stream of "
              f"{', '.join(r['text']['sources'])}." if (r.get("text") or {}).get("prob") else "."),
           f"- Objective: LLaDA's masked diffusion (1/t weighting, per-row answer length), "
           f"{100 * r.get('block_mask_prob', 0):.0f}% of chat rows with block-structured masking (block "
           f"{r['block_length']}); positions after the end-of-turn are mask tokens the model sees but is not trained "
           "on (no padding targets).",
           f"- Optimiser: AdamW, lr {r['lr']}, warm-up {r.get('warmup', 0)}, cosine to {r.get('min_lr_ratio', 0.1)}× "
           f"over {r['steps']} planned steps, batch {r['batch_size']}, "
           f"{'bf16 autocast' if r.get('amp', 'bf16') == 'bf16' else 'float32'}.",
           f"- So far: {tr['step']} steps, {tr['tokens']:,} tokens, {tr['train_hours']} h of training in "
           f"{len(runs)} run(s) on {dev}.",
           "",
           f"## Held-out curve (first {tr['eval_rows']} rows of {held}, fixed masks)",
           ""]
    out += _curve_table(tr["curve"])
    gl = r.get("samples", {}).get("gen_length", 128)
    out += ["", f"## Answers (greedy, {gl} tokens, block {r['block_length']}, one token per step, early stop)", ""]
    for s in tr.get("samples", []):
        out += [f"**Prompt**: {s['prompt']}", "", f"{tr['name']}:", _quote(s["answer"]), ""]
        if s.get("reference") is not None:
            out += [f"{s.get('reference_name', 'reference dLLM')}:", _quote(s["reference"]), ""]
    return "\n".join(out) + "\n"


def write(folder: Path):
    tr = json.loads((Path(folder) / "training.json").read_text())
    (Path(folder) / "README.md").write_text(render(tr), encoding="utf-8")
