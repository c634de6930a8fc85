"""Byte-level BPE tokenizer shared by every reference model, with the instruction (chat) format.

The prompt format used in SFT is exactly what ``tokenizer.apply_chat_template([{"role": "user", ...}],
add_generation_prompt=True)`` produces, so ``DiffusionBackend.encode_prompt(text, chat=True)`` and the
AR models' prompts match training.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

from .chat_format import (ASSISTANT, BOS, CHAT_TEMPLATE, EOS, EOT, MASK, PAD, SPECIAL_TOKENS,  # noqa: F401
                          USER, format_prompt)


def _sample_texts(data_dir: Path, max_chars: int, seed: int) -> Iterator[str]:
    from .data import read_jsonl, stdlib_files

    rng = random.Random(seed)
    docs = [r["text"] for r in stdlib_files(data_dir, "train")]
    docs += [r["text"] for r in read_jsonl(data_dir / "python_docs" / "train.jsonl")]
    rng.shuffle(docs)
    gsm = read_jsonl(data_dir / "gsm8k" / "train.jsonl")
    yield from (r["question"] + "\n" + r["answer"] for r in gsm)
    n = 0
    for d in docs:
        if n >= max_chars:
            break
        yield d
        n += len(d)


def train_tokenizer(data_dir, out_dir, vocab_size: int = 8192, max_chars: int = 12_000_000, seed: int = 0,
                    model_max_length: int = 1024):
    """Train the BPE on (a seeded sample of) the training corpus and save a fast tokenizer to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_sample_texts(Path(data_dir), max_chars, seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   mask_token=MASK, additional_special_tokens=[EOT, USER, ASSISTANT],
                                   model_max_length=model_max_length, clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return fast


def load_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def special_ids(tok) -> dict:
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in
           (("pad", PAD), ("eos", EOS), ("bos", BOS), ("mask", MASK), ("eot", EOT), ("user", USER),
            ("assistant", ASSISTANT))}
    return ids
