"""Model cards (``models/<name>/README.md``) generated from measured JSON: training.json (written by the
training loop), eval.json (``spiffy_train.evaluate``) and, for the dLLM, speculatability.json.

    python -m spiffy_train.cards models/spiffy-dllm-ref [--notes FILE]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

CPU_HARDWARE = ("CPU only: {name}, no GPU (none was lent for this task); the torch thread count is in the "
                "table above, and whether other jobs shared the cores is in the notes. PyTorch float32 training; "
                "weights saved as bfloat16 safetensors.")
GPU_HARDWARE = ("One GPU: {name} (torch {torch}), bf16 autocast with float32 master weights, trained on the "
                "device machine from a training-only data pack (`python -m spiffy_train.datapack`, see "
                "models/device/README.md); weights saved as bfloat16 safetensors. Evaluation ran on the CPU.")


def _on_gpu(tr: dict) -> bool:
    return str(tr.get("device", "cpu")).startswith("cuda")


def hardware(tr: dict) -> str:
    gpu = _on_gpu(tr)
    name = tr.get("device_name") or ("a GPU" if gpu else "a 2-core AMD EPYC x86 machine")
    return (GPU_HARDWARE if gpu else CPU_HARDWARE).format(name=name, torch=tr.get("torch_version", "?"))


def headline(tr: dict) -> str:
    if _on_gpu(tr):
        return (f"**These are small models trained for {tr.get('wall_min', '?')} minutes on one GPU: expect weak, "
                "often wrong output. They exist so the decoders can be exercised and timed on real-text models "
                "with the real architectures; they are not useful language models.**")
    return ("**These are tiny models trained for at most two hours on a 2-core CPU: expect weak, often "
            "wrong or repetitive output. They exist so the decoders can be exercised and timed on real-text "
            "models with the real architectures; they are not useful language models.**")


def _load(p: Path):
    return json.loads(p.read_text()) if p.exists() else None


def _arch(cfg: dict) -> str:
    if cfg.get("model_type") == "llada":
        return (f"LLaDA architecture (`spiffy.backends.llada.LLaDAModelLM`, bidirectional transformer, RMSNorm, "
                f"SwiGLU, RoPE θ={cfg['rope_theta']:g}): d_model {cfg['d_model']}, {cfg['n_layers']} layers, "
                f"{cfg['n_heads']} heads, MLP {cfg['mlp_hidden_size']}, vocab {cfg['vocab_size']}, "
                f"weight tying {cfg.get('weight_tying')}, max_sequence_length {cfg['max_sequence_length']}. "
                f"Special ids: mask {cfg['mask_token_id']}, eos {cfg['eos_token_id']}, pad {cfg['pad_token_id']}, "
                f"eot {cfg.get('eot_token_id')}, bos {cfg['bos_token_id']}.")
    return (f"`transformers.LlamaForCausalLM`: hidden {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers, "
            f"{cfg['num_attention_heads']} heads, MLP {cfg['intermediate_size']}, vocab {cfg['vocab_size']}, "
            f"tied embeddings {cfg.get('tie_word_embeddings')}, max positions {cfg['max_position_embeddings']}.")


def _block(text: str) -> str:
    return "```\n" + text.replace("```", "ʼʼʼ").rstrip() + "\n```"


def render(model_dir, notes: str = "") -> str:
    d = Path(model_dir)
    cfg = json.loads((d / "config.json").read_text())
    tr = _load(d / "training.json") or {}
    ev = _load(d / "eval.json") or {}
    sp = _load(d / "speculatability.json")
    name = d.name
    kind = "dllm" if cfg.get("model_type") == "llada" else "ar"
    L = [f"# {name}", ""]
    role = {"dllm": "Reference masked-diffusion LM (the default model of `spiffy sample`; the project's speed "
                    "figures are measured on it).",
            "ar": "Reference autoregressive model (same tokenizer and chat template as spiffy-dllm-ref)."}[kind]
    if name == "spiffy-ar-draft":
        role = "Small autoregressive drafter for spiffy-ar-ref (same tokenizer and chat template)."
    L += [role, "", headline(tr), ""]
    L += ["## Architecture", "", _arch(cfg), "", f"Parameters: **{tr.get('params', 'n/a'):,}**." if tr else "", ""]
    L += ["## Data", "",
          "Tokenizer: byte-level BPE, 8192 entries, trained with `tokenizers` on a seeded sample of the "
          "training corpus (models/tokenizer, copied here). Chat format: `<|user|>\\n{prompt}<|eot|>\\n"
          "<|assistant|>\\n{answer}<|endoftext|>` (the `chat_template` in tokenizer_config).", "",
          "Pretraining mixture (packed windows, EOS between documents): GSM8K train (question + worked answer), "
          "CPython 3.11 stdlib source without test packages, Python 3.11 docs (reST), MBPP train "
          "(ids 1-10 and 511-974). SFT: GSM8K train, MBPP train (prompt = text + tests, answer = code), and "
          "stdlib functions (prompt = signature + docstring, answer = body). Never used: GSM8K test, "
          "HumanEval, MBPP test ids 11-510.", ""]
    if tr:
        L += ["| stage | steps | batch | tokens processed | wall (min) | final loss (EMA) | data |", "|---|---|---|---|---|---|---|"]
        for st in tr.get("stages", []):
            if "tokens_available" in st:
                data = ", ".join(f"{k} {v:,} tok" for k, v in st["tokens_available"].items())
            else:
                data = (f"{st.get('sft_rows', 0):,} SFT rows ({st.get('prompt_tokens', 0):,} prompt + "
                        f"{st.get('answer_tokens', 0):,} answer tokens)")
            fl = st.get("final_loss_ema")
            L.append(f"| {st['name']}{' (carried over)' if st.get('resumed') else ''} | {st['steps']} | {st['batch_size']} | {st['tokens']:,} | {st['wall_min']} | "
                     f"{'n/a' if fl is None else round(fl, 3)} | {data} |")
        L += ["", f"Total wall time {tr.get('wall_min')} min (including data preparation), "
              f"{tr.get('torch_threads')} torch thread(s), device {tr.get('device')}, seed {tr.get('seed')}.", ""]
        if kind == "dllm":
            L += ["Objective: LLaDA masked diffusion: t ~ U(0, 1) per sequence, p = (1-ε)t + ε, each token masked with "
                  "probability p, cross-entropy on masked tokens weighted by 1/p, normalised by batch × length "
                  "(pretraining) or by each row's answer length (SFT; prompt never masked; the answer is padded "
                  "with EOS up to 256 tokens and the EOS run is trained like any token).", ""]
            for st in (tr.get("recipe") or {}).get("stages", []):
                if st.get("block_mask_prob"):
                    L += [f"Stage `{st['name']}` draws {st['block_mask_prob']:.0%} of its rows with block-structured "
                          f"masking (block {st.get('block_length', 32)}): one answer block b is chosen, the blocks "
                          "before it stay clean, its tokens are masked with probability p and every later token is "
                          "masked (p = 1), the states that semi-autoregressive block decoding visits; the other "
                          "rows use the plain LLaDA masking above. The loss is the same 1/p-weighted sum.", ""]
            if tr.get("resumed_from"):
                L += [f"Stages marked as carried over were trained by an earlier run of the same recipe; this run "
                      f"loaded that checkpoint and ran the rest (`--resume-from ... --start-stage`), "
                      f"{tr.get('wall_min_this_run')} min. The total above adds both runs.", ""]
        else:
            L += ["Objective: next-token cross-entropy (pretraining: all tokens; SFT: answer tokens and the "
                  "closing EOS only).", ""]
    L += ["## Hardware", "", hardware(tr), ""]
    if ev:
        L += ["## Held-out evaluation", "", f"Measured by `python -m spiffy_train.evaluate models/{name}` "
              f"(numbers in `eval.json`).", ""]
        h = ev["heldout"]
        if kind == "dllm":
            ratios = list(h["python_stdlib_valid"].keys())
            L += ["Masked-token cross-entropy (nats/token, mean over masked tokens, fixed seeded masks) at mask ratio:", "",
                  "| data | " + " | ".join(ratios) + " |", "|---" * (len(ratios) + 1) + "|",
                  "| python_stdlib valid (%d windows × %d tokens) | " % tuple(h["python_stdlib_valid_windows"]) +
                  " | ".join(str(h["python_stdlib_valid"][r]) for r in ratios) + " |",
                  "| GSM8K test answers (first %d; prompt unmasked) | " % h["gsm8k_test_questions"] +
                  " | ".join(str(h["gsm8k_test"][r]) for r in ratios) + " |", ""]
        else:
            L += ["| data | loss (nats/token) | perplexity |", "|---|---|---|",
                  "| python_stdlib valid (%d windows × %d tokens) | %s | %s |" % (
                      *h["python_stdlib_valid_windows"], h["python_stdlib_valid"]["loss"], h["python_stdlib_valid"]["ppl"]),
                  "| GSM8K test answers given the prompt (first %d) | %s | %s |" % (
                      h["gsm8k_test_questions"], h["gsm8k_test_answers"]["loss"], h["gsm8k_test_answers"]["ppl"]), ""]
        fb = ev["fixed_batch"]
        L += [f"Fixed check batch (`spiffy_train.evaluate.FIXED_TEXTS`, 3 × 64 tokens"
              f"{', seeded 50% mask' if kind == 'dllm' else ''}): loss {fb['loss']} (checked by "
              "tests/test_reference_models.py).", ""]
        g = ev.get("gsm8k")
        L += ["## GSM8K", "", "Not measured: eval.json has no GSM8K part (`python -m spiffy_train.evaluate "
              f"models/{name} --parts gsm8k`)." if g is None else
              f"Accuracy on the first {g['n']} GSM8K test questions: **{g['correct']}/{g['n']} = "
              f"{100 * g['accuracy']:.1f}%** (answer parsed from `#### N`; {g['with_answer_marker']} outputs contained "
              f"a `#### N` marker). Decoding: {g['decoding']}.", ""]
        L += ["## Samples", "", f"Decoding: {ev['samples_decoding']}. Outputs are shown verbatim up to the first EOS.", ""]
        for s in ev["samples"]:
            L += [f"**{s['id']}**", "", "Prompt:", "", _block(s["prompt"]), "", "Output:", "", _block(s["output"] or "(empty)"), ""]
    if sp:
        L += ["## Speculatability", "",
              f"`python -m spiffy_train.speculatability models/{name} --cache {sp.get('cache', 'none')}` on the "
              f"{sp['dataset']} (gen_length {sp['gen_length']}, block_length {sp['block_length']}, greedy, "
              f"1 token/step, KV-cache mode `{sp.get('cache', 'none')}`): Spiffy's decode loop replayed over the "
              "greedy traces with the top-1 chain graph of each depth (the draft d steps ahead fills the d most "
              "confident masked positions with their top-1 tokens); the ratio is baseline calls over the calls "
              "of that replay, which is the NFE the decoder measures with that graph.", "",
              f"Mean top-1 probability of the committed token per step: **{sp['mean_top1_prob_committed']}**; "
              f"steps committing EOS: {100 * sp['fraction_steps_committing_eos']:.1f}%.", "",
              "| depth | " + " | ".join(sp["ratio_by_depth"].keys()) + " |",
              "|---" * (len(sp["ratio_by_depth"]) + 1) + "|",
              "| baseline calls / spiffy calls | " + " | ".join(str(v["ratio"]) for v in sp["ratio_by_depth"].values()) + " |",
              ""]
    if notes:
        L += ["## Notes", "", notes.strip(), ""]
    cmds = [f"spiffy train --recipe models/recipes/{name}.json --log runs/{name}.jsonl"]
    if tr.get("resumed_from"):  # how the committed checkpoint was actually made: two runs of the same recipe
        later = [st["name"] for st in tr.get("stages", []) if not st.get("resumed")]
        if later:
            cmds += [f"# the committed checkpoint ran the stages before {later[0]!r} first, then (same recipe):",
                     f"# spiffy train --recipe models/recipes/{name}.json --resume-from DIR_OF_THAT_RUN "
                     f"--start-stage {later[0]}"]
    cmds.append(f"python -m spiffy_train.evaluate models/{name}")
    if sp:
        cmds.append(f"python -m spiffy_train.speculatability models/{name} --cache {sp.get('cache', 'none')}")
    cmds.append(f"python -m spiffy_train.cards models/{name}")
    L += ["## Re-training", "", "```"] + cmds + ["```", "",
          "The stage lengths (minutes, steps) are in the recipe; `--max-minutes M` is a wall budget for the "
          "whole run, data preparation included, and shrinks the stages proportionally to fit. "
          "`--data-dir` defaults to `spiffy.datasets.default_data_dir()`. On a GPU (`--device cuda`" +
          ("" if _on_gpu(tr) else "; dry-run on the CPU only, not yet run on a GPU") +
          ") the recipe's `cuda` section applies (bf16 autocast, larger model and batches); "
          "models/device/README.md trains all three reference models that way in one device call. The evaluation "
          "can be split over processes with `--parts`/`--gsm8k-range`/`--range` and merged with `--merge`; the "
          "single commands above compute the same numbers."]
    return "\n".join(L) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description="write models/<name>/README.md from measured JSON")
    ap.add_argument("model")
    ap.add_argument("--notes", default=None, help="a markdown file appended as Notes")
    a = ap.parse_args(argv)
    notes = Path(a.notes).read_text() if a.notes else ""
    out = Path(a.model) / "README.md"
    out.write_text(render(a.model, notes))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
