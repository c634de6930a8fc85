"""Fit a calibrated graph's acceptance model (:mod:`spiffy.speculative.acceptance`) on calibration traces.

Every trace is replayed with the graph unpruned; each round's instantiated drafts give one row of features,
labelled by whether the baseline's trajectory passes through the draft's state later in the block (the
trajectory only ever commits tokens, so that is the draft the walk could accept). `spiffy calibrate` fits one
model per written graph on its calibration traces; ``python -m spiffy.calibration.acceptance_fit SET_DIR`` adds
them to a set written before models existed (re-tracing the set's own prompts, checked against its record).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import networkx as nx

from ..errors import ArtifactError, SpiffyError
from ..speculative.acceptance import FEATURES, fit_logistic, node_features


def acceptance_rows(traces, graph: nx.DiGraph, cfg, sampler: str):
    """Features (by name, :func:`~spiffy.speculative.acceptance.node_features`) and labels of every draft of every
    round of ``traces`` replayed with ``graph``."""
    from ..speculative.config import SpeculativeConfig
    from ..speculative.replay import replay_trace
    from ..speculative.walk import GraphProvider

    provider = GraphProvider(SpeculativeConfig(graph=graph, use_calibration=False), None, cfg, sampler)
    X, y = [], []
    for tr in traces:
        later = {}      # state -> the states after it in its block
        for bt in tr.blocks:
            for t, s in enumerate(bt.states):
                later.setdefault(s, set(bt.states[t + 1:]))

        def record(g, inst):
            ahead = later[inst.block]
            for f, state in inst.states.items():
                X.append(node_features(g, f, inst))
                y.append(state in ahead)
            return set(inst.states)

        replay_trace(tr, provider, record)
    return X, y


def auc(scores, labels) -> float:
    import numpy as np

    s, y = np.asarray(scores), np.asarray(labels, dtype=bool)
    ranks = np.empty(len(s))
    ranks[np.argsort(s, kind="stable")] = np.arange(1, len(s) + 1)
    pos = int(y.sum())
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos)))


def fit_acceptance(traces, graph: nx.DiGraph, cfg, sampler: str, features=FEATURES, terms: str = "quadratic"):
    """The ``meta["acceptance"]`` entry for ``graph`` fitted on ``traces`` (by default quadratic terms of all
    the features), or None when the traces hold no accepted or no rejected draft (nothing to fit)."""
    X, y = acceptance_rows(traces, graph, cfg, sampler)
    if not X or all(y) or not any(y):
        return None
    model = fit_logistic([[x[k] for k in features] for x in X], y, tuple(features), terms)
    fit = {"drafts": len(y), "reached": int(sum(y)), "traces": len(traces),
           "auc": round(auc([model.prob(x) for x in X], y), 4)}
    return model.to_meta(fit)


def refit_set(folder, backend=None, chat: bool = True, progress: bool = False) -> list:
    """Add fitted acceptance models to every ``D<k>.json`` of a calibration set (atomically, one file at a
    time), tracing the set's prompts again with its recorded setting (``chat``: as the set was traced, with the
    chat template; ``backend``: default, the set's model by name). Returns the files written."""
    from ..atomic import atomic_write_json
    from ..backends import load_backend
    from ..datasets import read_jsonl
    from ..sampling.config import GenerationConfig
    from ..sampling.loop import sampler_of
    from ..speculative.calibrated import calibration_root, check_meta
    from ..speculative.graph import graph_to_dict, load_graph
    from .pipeline import prompt_set_digest, trace_set

    folder = Path(folder)
    files = sorted(folder.glob("D*.json"))
    if not files:
        raise ArtifactError(f"{folder}: no D<k>.json graphs to fit")
    graphs = {f: load_graph(f) for f in files}
    meta = graphs[files[0]].graph.get("meta") or {}
    sampler = dict(meta.get("sampler") or {})
    if sampler.pop("temperature_band", None) != "greedy (T = 0)":
        raise ArtifactError(f"{folder}: only greedy calibration sets can be re-traced here")
    ps = meta.get("prompt_set") or {}
    prompts = None
    for root in (folder.parent.parent, calibration_root()):
        if (root / ps.get("file", "")).is_file():
            prompts = root / ps["file"]
            break
    if prompts is None:
        raise ArtifactError(f"{folder}: its prompt set {ps.get('file')!r} is not there")
    if prompt_set_digest(prompts.read_bytes()) != ps.get("sha"):
        raise ArtifactError(f"{prompts}: not the prompt set the set was calibrated on (its hash differs)")
    rows = list(read_jsonl(prompts))
    backend = backend if backend is not None else load_backend(meta["model"])
    check_meta(meta, str(files[0]), backend)     # the model the set was calibrated for (fingerprint)
    cfg = GenerationConfig(**sampler)
    depth = max(int((g.graph.get("meta") or {}).get("budget", 1)) for g in graphs.values())
    ts = trace_set(backend, ps.get("name", "calibration"), rows, cfg, depth, int(meta.get("token_ranks", 4)),
                   chat, progress)
    want = (meta.get("calibration") or {}).get("baseline_calls")
    if want is not None and ts.baseline != want:
        raise ArtifactError(f"{folder}: re-tracing gave {ts.baseline} baseline calls, the set records {want}: "
                            "not the model or setting it was calibrated with")
    written = []
    for f, g in graphs.items():
        entry = fit_acceptance(ts.traces, g, cfg, sampler_of(backend, cfg))
        if entry is None:
            continue
        out = graph_to_dict(g)
        out["meta"]["acceptance"] = entry
        atomic_write_json(f, out)
        written.append(f)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spiffy.calibration.acceptance_fit", description=refit_set.__doc__)
    ap.add_argument("set_dir")
    ap.add_argument("--model", default=None, help="model to trace with [default: the set's own]")
    ap.add_argument("--raw", action="store_true", help="the set was traced without the chat template")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (one per process when several run side by side) [default: torch's]")
    a = ap.parse_args(argv)
    if a.threads is not None and a.threads < 1:
        ap.error(f"--threads must be at least 1 (got {a.threads})")
    try:
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        from ..backends import load_backend

        backend = load_backend(a.model) if a.model else None
        for f in refit_set(a.set_dir, backend, chat=not a.raw, progress=True):
            acc = json.loads(f.read_text())["meta"]["acceptance"]
            print(f"{f}: {acc['fit']}")
    except SpiffyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
