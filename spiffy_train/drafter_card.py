"""The model card of a block drafter (``models/<name>/README.md``), generated from its training.json: what it
reads, what it was trained on, and the held-out acceptance curve; speed figures from ``bench.json`` when a
measured one lies beside it."""
from __future__ import annotations

import json
from pathlib import Path


def render(tr: dict, bench: dict | None = None, shortlist: dict | None = None) -> str:
    r = tr["recipe"]
    d = r["drafter"]
    runs = tr.get("runs", [])
    dev = ", ".join(sorted({f"{x['device']} ({x['threads']} threads)" for x in runs})) or "?"
    last = tr["curve"][-1]
    out = [f"# {tr['name']}",
           "",
           f"A block-diffusion drafter for the AR target **{tr['target']}**: one forward fills a block of "
           f"{d['block'] - 1} tokens after the last committed token, reading the target's own hidden states (the "
           f"outputs of its layers {d['target_layers']}, which the target computes while it verifies). "
           f"{d['layers']} transformer layers, bidirectional within the block; the target's frozen embedding and "
           f"LM head. Only the trainable part ships here ({tr.get('drafter_mb', '?')} MB, "
           f"{tr['trainable_params']:,} parameters); the target comes from `spiffy models fetch {tr['target']}`.",
           "",
           "**Generated from measured JSON (training.json).** Trained on a CPU for a short time.",
           "",
           "```bash",
           f"spiffy sample --target {tr['target']} --drafter {tr['name']} --prompt \"What is 12 times 7?\"",
           "```",
           "",
           "## Data",
           "",
           f"The target's own greedy answers (up to {r['answers']['max_new_tokens']} tokens) to training prompts: "
           + ", ".join(f"{n} {s}" for s, n in tr.get("by_source", {}).items())
           + f" ({tr['train_rows']} rows, {tr['answer_tokens']:,} answer tokens); {tr['heldout_rows']} more rows "
           "held out. GSM8K test and HumanEval are never trained on.",
           "",
           "## Training",
           "",
           f"{tr['step']} steps (batch {r['batch_size']} rows x {r['anchors']} blocks), {tr['tokens']:,} drafted "
           f"slots trained, {tr['train_hours']:.2f} h on {dev}. Recipe: `models/recipes/{r['name']}.json`.",
           "",
           "## Held-out acceptance (greedy, teacher-forced on the target's own answers)",
           "",
           "Slot k: the share of blocks whose first k drafted tokens are all the target's.",
           "",
           "| step | hours | tokens per target call | accepted per block | slot 1 | slot 2 | slot 3 | slot 4 |",
           "|---|---|---|---|---|---|---|---|"]
    for c in tr["curve"]:
        s = c["accept_by_slot"]
        pick = [f"{100 * s[i]:.0f}%" if i < len(s) else "-" for i in (0, 1, 2, 3)]
        out.append(f"| {c['step']} | {c['train_h']:.2f} | {c['tokens_per_call']:.2f} | {c['accepted_per_block']:.2f} | "
                   + " | ".join(pick) + " |")
    out += ["", f"Last: {last['tokens_per_call']:.2f} tokens per target call over {last['blocks']} held-out blocks "
            "(the computation of a greedy chain of the full block in decoding, on held-out training-split answers; "
            "decoding also stops at the end of the answer).", "",
            "The bench figures below are measured: spiffy bench --mode ar, GSM8K test and HumanEval, 5 prompts each, "
            "256 new tokens, 1 thread per process on a 2-core CPU (README: 'A drafter trained for SmolLM2')."]
    if shortlist:
        made = ", ".join(f"{k} ({v} texts)" for k, v in shortlist.get("made_from", {}).items())
        out += ["", "## Vocabulary shortlist (`shortlist.json`)", "",
                f"At run time the drafter scores {shortlist['size']:,} of the target's ids, "
                "the most frequent on the training text "
                f"({made}; {100 * shortlist['coverage_of_counted_tokens']:.1f}% of its {shortlist['tokens_counted']:,} "
                "tokens), plus every id of the prompt and of the text decoded so far: a cheaper head, the same output "
                "(the target verifies). `python -m spiffy_train.shortlist` writes it; delete the file to score the "
                "whole vocabulary."]
    if bench:
        out += ["", "## Measured in decoding (`spiffy bench --mode ar`, from bench.json)", "",
                "| dataset | strategy | tokens per target call | wall ratio (median) | identical |", "|---|---|---|---|---|"]
        for row in bench.get("rows", []):
            out.append(f"| {row['dataset']} | {row['strategy']} | {row['tokens_per_target_call']:.2f} | "
                       f"{row['wall_ratio_median']:.2f}x | {100 * row['identical_rate']:.0f}% |")
    return "\n".join(out) + "\n"


def write(folder: Path):
    from spiffy.atomic import atomic_write_text

    folder = Path(folder)
    tr = json.loads((folder / "training.json").read_text())
    bench = json.loads((folder / "bench.json").read_text()) if (folder / "bench.json").exists() else None
    short = json.loads((folder / "shortlist.json").read_text()) if (folder / "shortlist.json").exists() else None
    atomic_write_text(folder / "README.md", render(tr, bench, short))
