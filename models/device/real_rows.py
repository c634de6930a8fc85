"""How often is a verification's real-state row bit-identical to the baseline's own step? (issue 16)

For the bundled reference dLLM on the given device: every verification Spiffy makes is followed by a diagnostic
forward of the baseline's step for the same real states (not counted), and the logits at the masked positions
are compared bit for bit. Plain shapes (the real state as one row of D + 1 batch copies or inside a packed
sequence, against a batch-1 step) and static shapes (both at the same padded shape). Prints one JSON line.
Usage: PYTHONPATH=. python3 models/device/real_rows.py [cuda|cpu] [dtype]
"""
import itertools
import json
import sys

import torch

from spiffy import GenerationConfig
from spiffy.backends import load_backend
from spiffy.speculative import SpeculativeConfig
from spiffy.speculative import decoder as dec
from spiffy.speculative.decoder import generate_speculative

device = sys.argv[1] if len(sys.argv) > 1 else "cpu"
be = load_backend("spiffy-dllm-ref", device=device, dtype=sys.argv[2] if len(sys.argv) > 2 else "float32")
prompts = [be.encode_prompt(t) for t in ["What is 12 times 7?", "Write a Python function that adds two numbers.",
                                         "Tom has 3 apples and buys 5 more. How many apples does he have?"]]
stats = {}
orig = dec.ModelScorer.score


def score(self, b, requests, counted=True):
    out = orig(self, b, requests, counted)
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
            same = torch.equal(lg[0][m], ref[row][m])
            diff = float((lg[0][m].double() - ref[row][m].double()).abs().max())
            st = stats.setdefault(key, {"identical": 0, "calls": 0, "max_abs_diff": 0.0})
            st["identical"] += int(same)
            st["calls"] += 1
            st["max_abs_diff"] = max(st["max_abs_diff"], diff)
    return out


dec.ModelScorer.score = score
for cache, verify, static in itertools.product(["dual", "prefix", "none"], ["batch", "packed"], [False, True]):
    cfg = GenerationConfig(gen_length=64, block_length=32, cache=cache)
    for p in prompts:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            generate_speculative(be, [p], cfg, SpeculativeConfig(budget=5, verify=verify, static=static))
print(json.dumps({"device": str(be.device), "name": torch.cuda.get_device_name() if be.device.type == "cuda" else "cpu",
                  "dtype": str(be.dtype), "rows": stats}))
