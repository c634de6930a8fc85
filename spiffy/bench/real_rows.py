"""Is a verification's real-state row the baseline's step, bit for bit? (the exactness question of issue 16)

Inside :func:`real_row_identity`, every counted verification Spiffy makes is followed by a diagnostic forward of
the baseline's own step for the same real states (not counted in NFE), and the logits at the masked positions are
compared bit for bit. Plain shapes compare a row of D + 1 batch copies (or of a packed sequence) with a batch-1
step; static shapes compare the same padded shape on both sides. ``python -m spiffy.bench.real_rows DEVICE
[DTYPE]`` runs it on the bundled reference dLLM.
"""
from __future__ import annotations

import contextlib

import torch

from ..speculative import decoder as _decoder


@contextlib.contextmanager
def real_row_identity():
    """Yields {"verify/cache/plain|static": {"identical", "calls", "max_abs_diff"}}, filled while the block runs."""
    stats = {}
    orig = _decoder.ModelScorer.score

    def score(self, b, requests, counted=True, every_row=False):
        full = orig(self, b, requests, counted, every_row)
        out = [full[row] for row, _ in requests] if every_row else full
        if counted:
            s = self.session
            lo, hi = s.span(b)
            blocks = s.x[:, lo:hi].clone()
            for row, states in requests:
                blocks[row] = torch.tensor(states[0], device=blocks.device)
            nfe = s.nfe
            ref = s.block_logits(b, blocks)
            s.nfe = nfe
            key = f"{self.spec.verify}/{s.cfg.cache}/{'static' if s.cfg.static_drafts else 'plain'}"
            for (row, states), lg in zip(requests, out):
                m = torch.tensor(states[0], device=blocks.device) == s.mask_id
                st = stats.setdefault(key, {"identical": 0, "calls": 0, "max_abs_diff": 0.0})
                st["identical"] += int(torch.equal(lg[0][m], ref[row][m]))
                st["calls"] += 1
                st["max_abs_diff"] = max(st["max_abs_diff"],
                                         float((lg[0][m].double() - ref[row][m].double()).abs().max()))
        return full

    _decoder.ModelScorer.score = score
    try:
        yield stats
    finally:
        _decoder.ModelScorer.score = orig


def main(argv=None) -> dict:
    import itertools
    import json
    import sys
    import warnings

    from ..backends import load_backend
    from ..sampling.config import GenerationConfig
    from ..speculative import SpeculativeConfig, generate_speculative

    argv = sys.argv[1:] if argv is None else argv
    be = load_backend("spiffy-dllm-ref", device=argv[0] if argv else "cpu", dtype=argv[1] if len(argv) > 1 else "float32")
    prompts = [be.encode_prompt(t) for t in ["What is 12 times 7?", "Write a Python function that adds two numbers.",
                                             "Tom has 3 apples and buys 5 more. How many apples does he have?"]]
    with real_row_identity() as stats, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # packed without the dual cache is near-lossless: measured, not warned
        for cache, verify, static in itertools.product(["dual", "prefix", "none"], ["batch", "packed"], [False, True]):
            cfg = GenerationConfig(gen_length=64, block_length=32, cache=cache)
            for p in prompts:
                generate_speculative(be, [p], cfg, SpeculativeConfig(budget=5, verify=verify, static=static))
    res = {"device": str(be.device), "dtype": str(be.dtype),
           "name": torch.cuda.get_device_name() if be.device.type == "cuda" else "cpu", "rows": stats}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
