"""Host-device synchronisations per step and per round, counted on the CPU by the reads that would stall a GPU
(spiffy.bench.syncs): the baseline reads nothing back while it decodes a fixed schedule; Spiffy reads ONE copy
per model call (its acceptance walk runs on the device and sends back the path and the next draft source)."""
import torch

from spiffy import GenerationConfig
from spiffy.backends.tiny import tiny_backend
from spiffy.bench.syncs import count_host_syncs, total
from spiffy.sampling.baseline import generate_baseline
from spiffy.speculative import SpeculativeConfig, generate_speculative


def test_counter_sees_reads():
    x = torch.arange(4)
    with count_host_syncs() as c:
        x.tolist(), bool(x.any()), float(x.sum()), torch.equal(x, x), x.nonzero(), torch.tensor([1], device="cpu")
    assert c == {"tolist": 1, "__bool__": 1, "__float__": 1, "equal": 1, "nonzero": 1, "upload": 1}
    x.tolist()
    assert total(c) == 6          # not counted after the block


def test_syncs_per_step_and_round():
    be = tiny_backend("llada", dtype=torch.float32)
    prompt = [[3, 4, 5, 6, 7]]
    spec = SpeculativeConfig(budget=4, use_calibration=False)
    for cache in ("none", "prefix", "dual"):
        cfg = GenerationConfig(gen_length=32, block_length=8, cache=cache)
        generate_speculative(be, prompt, cfg, spec)            # the backend's one-time fingerprint reads
        with count_host_syncs() as c:
            base = generate_baseline(be, prompt, cfg)
        assert total(c) <= 2, dict(c)                          # the prompt's upload and the final read
        with count_host_syncs() as c:
            out = generate_speculative(be, prompt, cfg, spec)
        st = out.stats
        assert st.rounds > 0 and out.token_ids == base.token_ids
        assert total(c) <= st.rounds + st.block_starts + 2, (cache, dict(c), st.steps, st.rounds)
