"""A causal n-gram model (Witten-Bell interpolated, default trigram) over the reference tokenizer.

DiffuSpec's path search scores a left-to-right path through the drafter's token lattice with the
drafter's log-probs and a causal n-gram's. The model is built from the project's *training* corpus
only (GSM8K train, MBPP train ids 1-10 and 511-974, the Python stdlib and docs training splits) —
never from GSM8K test, HumanEval or MBPP test ids 11-510 — and stored as sorted hashed n-gram
arrays in one compressed ``.npz`` (a few MB).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..errors import ArtifactError, ConfigError
from ..resources import resource_dir

DEFAULT_NGRAM_PATH = resource_dir("models") / "ngram" / "ref-3gram.npz"


def tokenizer_fingerprint(tok) -> str:
    """Hash of the tokenizer's (token, id) table, stored with the artifact and checked at load."""
    items = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha1(json.dumps(items, ensure_ascii=True).encode()).hexdigest()[:16]


class NGramModel:
    """Witten-Bell interpolated n-gram with add-one unigrams at the bottom."""

    def __init__(self, n: int, vocab_size: int, unigram: np.ndarray, tables: dict, fingerprint: str = ""):
        self.n = int(n)
        self.V = int(vocab_size)
        self.unigram = unigram.astype(np.int64)
        # tables[k] (k = 2..n): (keys, counts, ctx_keys, ctx_total, ctx_types), all sorted by key
        self.tables = tables
        self.fingerprint = fingerprint
        self._p1 = (self.unigram + 1.0) / (self.unigram.sum() + self.V)

    # ---- building
    @classmethod
    def from_sequences(cls, seqs: Iterable, vocab_size: int, n: int = 3, min_count: int = 1,
                       fingerprint: str = "") -> "NGramModel":
        if n < 1:
            raise ConfigError(f"n-gram order must be >= 1 (got {n})")
        V = int(vocab_size)
        uni = np.zeros(V, dtype=np.int64)
        grams = {k: [] for k in range(2, n + 1)}
        for s in seqs:
            a = np.asarray(s, dtype=np.int64)
            if a.size == 0:
                continue
            uni += np.bincount(a, minlength=V)[:V]
            for k in range(2, n + 1):
                if a.size < k:
                    continue
                h = np.zeros(a.size - k + 1, dtype=np.int64)
                for i in range(k):
                    h = h * V + a[i: a.size - k + 1 + i]
                grams[k].append(h)
        tables = {}
        for k in range(2, n + 1):
            h = np.concatenate(grams[k]) if grams[k] else np.zeros(0, dtype=np.int64)
            keys, counts = np.unique(h, return_counts=True)
            keep = counts >= min_count
            keys, counts = keys[keep], counts[keep].astype(np.int64)
            ctx = keys // V
            ctx_keys, first, types = np.unique(ctx, return_index=True, return_counts=True)
            total = np.add.reduceat(counts, first) if counts.size else np.zeros(0, dtype=np.int64)
            tables[k] = (keys, counts, ctx_keys, total.astype(np.int64), types.astype(np.int64))
        return cls(n, V, uni, tables, fingerprint)

    # ---- persistence
    def save(self, path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrs = {"unigram": self.unigram.astype(np.int32)}
        for k, (keys, counts, ck, tot, typ) in self.tables.items():
            arrs[f"k{k}_keys"] = keys
            arrs[f"k{k}_counts"] = counts.astype(np.int32)
            arrs[f"k{k}_ctx"] = ck
            arrs[f"k{k}_total"] = tot.astype(np.int32)
            arrs[f"k{k}_types"] = typ.astype(np.int32)
        meta = json.dumps({"n": self.n, "vocab_size": self.V, "fingerprint": self.fingerprint, "format": 1})
        np.savez_compressed(path, meta=np.frombuffer(meta.encode(), dtype=np.uint8), **arrs)

    @classmethod
    def load(cls, path, tokenizer=None) -> "NGramModel":
        path = Path(path)
        if not path.exists():
            raise ArtifactError(f"n-gram model {path} is missing: build it with `python -m spiffy.ar.ngram "
                                "--tokenizer DIR --out PATH` (see the README, section AR-verifier mode)")
        try:
            z = np.load(path)
            meta = json.loads(bytes(z["meta"]).decode())
            n, V = int(meta["n"]), int(meta["vocab_size"])
            tables = {k: (z[f"k{k}_keys"], z[f"k{k}_counts"].astype(np.int64), z[f"k{k}_ctx"],
                          z[f"k{k}_total"].astype(np.int64), z[f"k{k}_types"].astype(np.int64))
                      for k in range(2, n + 1)}
            model = cls(n, V, z["unigram"], tables, meta.get("fingerprint", ""))
        except Exception as e:
            raise ArtifactError(f"n-gram model {path} is unreadable or corrupt: {type(e).__name__}: {e}") from None
        if tokenizer is not None and model.fingerprint and model.fingerprint != tokenizer_fingerprint(tokenizer):
            raise ArtifactError(f"n-gram model {path} was built with a different tokenizer than the target's")
        return model

    @classmethod
    def for_tokenizer(cls, tokenizer, path=None) -> "NGramModel":
        """``path`` if given, else the shipped artifact (models/ngram/*.npz) built with ``tokenizer``."""
        if path is not None:
            return cls.load(path, tokenizer)
        want = tokenizer_fingerprint(tokenizer) if tokenizer is not None else None
        shipped = sorted(DEFAULT_NGRAM_PATH.parent.glob("*.npz"))
        for cand in [DEFAULT_NGRAM_PATH] + [c for c in shipped if c != DEFAULT_NGRAM_PATH]:
            try:
                with np.load(cand) as z:
                    fp = json.loads(bytes(z["meta"]).decode()).get("fingerprint", "")
            except Exception:
                continue
            if want is None or fp == want:
                return cls.load(cand, tokenizer)
        raise ArtifactError(f"no shipped n-gram model in {DEFAULT_NGRAM_PATH.parent} was built with this tokenizer: "
                            "build one with `python -m spiffy.ar.ngram --tokenizer DIR --out PATH` and pass it")

    # ---- scoring
    @staticmethod
    def _lookup(keys: np.ndarray, vals: np.ndarray, q: np.ndarray) -> np.ndarray:
        if keys.size == 0:
            return np.zeros(q.shape, dtype=np.int64)
        i = np.searchsorted(keys, q).clip(max=keys.size - 1)
        return np.where(keys[i] == q, vals[i], 0)

    def prob(self, context, cands) -> np.ndarray:
        """P(w | context) for each candidate w (only the last n-1 context tokens are used)."""
        cands = np.asarray(cands, dtype=np.int64)
        ok = (cands >= 0) & (cands < self.V)
        c = cands.clip(0, self.V - 1)
        p = self._p1[c].copy()
        ctx = [int(t) for t in list(context)[-(self.n - 1):]] if self.n > 1 else []
        for k in range(2, self.n + 1):
            if len(ctx) < k - 1 or any(not 0 <= t < self.V for t in ctx[len(ctx) - (k - 1):]):
                continue
            h = 0
            for t in ctx[len(ctx) - (k - 1):]:
                h = h * self.V + t
            keys, counts, ck, tot, typ = self.tables[k]
            j = np.searchsorted(ck, h)
            if j >= ck.size or ck[j] != h:
                continue
            T, N = float(typ[j]), float(tot[j])
            cw = self._lookup(keys, counts, h * self.V + c).astype(np.float64)
            p = (cw + T * p) / (N + T)
        return np.where(ok, p, 1e-12)

    def logprob(self, context, cands) -> np.ndarray:
        return np.log(np.maximum(self.prob(context, cands), 1e-12))


def training_texts(data_dir, max_code_chars: int = 6_000_000):
    """The training corpus the n-gram is built from; test sets are never read."""
    d = Path(data_dir)

    def jl(p):
        if not p.exists():
            raise ConfigError(f"{p} is missing from the data directory")
        with open(p, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

    for r in jl(d / "gsm8k" / "train.jsonl"):
        yield r["question"]
        yield r["answer"]
    for r in jl(d / "mbpp" / "mbpp.jsonl"):
        if int(r["task_id"]) in range(11, 511):
            continue   # MBPP test split: never used
        yield r["text"]
        yield r["code"]
    n = 0
    for name in ("python_docs", "python_stdlib"):
        for r in jl(d / name / "train.jsonl"):
            if r.get("path", "").startswith("Lib/test/"):
                continue
            if n >= max_code_chars:
                break
            yield r["text"]
            n += len(r["text"])


def build_ngram(tokenizer, data_dir=None, out=None, n: int = 3, min_count: int = 2,
                max_code_chars: int = 6_000_000) -> NGramModel:
    """Build the causal n-gram from the training corpus in ``data_dir`` (default: the project's data
    directory) with ``tokenizer`` (a tokenizer object or a directory) and save it to ``out``."""
    from ..datasets import resolve_data_dir

    d = resolve_data_dir(data_dir)
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    texts = list(training_texts(d, max_code_chars))
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    model = NGramModel.from_sequences(enc, len(tokenizer), n=n, min_count=min_count,
                                      fingerprint=tokenizer_fingerprint(tokenizer))
    if out is not None:
        model.save(out)
    return model


def main(argv: Optional[list] = None):
    import argparse

    ap = argparse.ArgumentParser(description="Build the causal n-gram used by DiffuSpec path search.")
    ap.add_argument("--tokenizer", default=str(resource_dir("models") / "tokenizer"))
    ap.add_argument("--data-dir", default=None, help="data directory [default: spiffy.datasets.default_data_dir()]")
    ap.add_argument("--out", default=str(DEFAULT_NGRAM_PATH))
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--min-count", type=int, default=2)
    ap.add_argument("--max-code-chars", type=int, default=6_000_000)
    a = ap.parse_args(argv)
    m = build_ngram(a.tokenizer, a.data_dir, a.out, a.n, a.min_count, a.max_code_chars)
    sizes = {k: int(t[0].size) for k, t in m.tables.items()}
    print(f"wrote {a.out}: n={m.n} vocab={m.V} tokens={int(m.unigram.sum())} grams={sizes} "
          f"({Path(a.out).stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
