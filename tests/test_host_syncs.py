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


def test_ar_chain_reads_once_per_round():
    """The AR loop with a diffusion drafter: the drafted chain stays on the device, goes into the target's
    forward as it is and comes back with the verdict (greedy: the target's argmax; sampled: the speculative
    sampling's accepted count and next token, drawn on the device) in ONE copy per round. What the counter
    sees beyond that is transformers' own (a few uploads per decode, measured on the plain decode)."""
    from spiffy.ar import generate_ar, make_drafter
    from tests.ar_fixtures import tiny_target

    tgt = tiny_target()
    drafter = make_drafter(tiny_backend("llada", dtype=torch.float64), tgt, cache="none")
    for temperature in (0.0, 0.8):
        kw = dict(max_new_tokens=40, temperature=temperature, gate=0, draft_length=4)
        generate_ar(tgt, drafter, [3, 4, 5, 6], **kw)
        with count_host_syncs() as plain:
            generate_ar(tgt, None, [3, 4, 5, 6], max_new_tokens=4, temperature=temperature)
        hf = total(plain) - 4                        # the plain decode reads each of its 4 tokens once
        with count_host_syncs() as c:
            res = generate_ar(tgt, drafter, [3, 4, 5, 6], **kw)
        assert res.rounds >= 8 and total(c) <= res.rounds + hf, (temperature, dict(c), res.rounds, hf)


def test_walk_without_early_exit_is_the_same_decode(monkeypatch):
    """On a GPU the walk never stops early (that would read a flag): it computes the full depth of the round and
    marks the steps past the path's end OFF. Forced here on the CPU, decodes are unchanged: tokens, calls and
    acceptance, greedy and sampled, fixed-count and threshold, one row and two."""
    from spiffy.speculative import decoder

    be = tiny_backend("llada", dtype=torch.float32)
    prompts = [[3, 4, 5, 6, 7], [8, 9, 10]]
    spec = SpeculativeConfig(budget=4, use_calibration=False)
    for kw in (dict(), dict(temperature=0.7, seed=3), dict(threshold=0.2)):
        cfg = GenerationConfig(gen_length=24, block_length=8, cache="dual", **kw)
        for batch in (prompts[:1], prompts):
            ref = generate_speculative(be, batch, cfg, spec)
            init = decoder.ModelScorer.__init__

            def no_early_exit(self, *a, **k):
                init(self, *a, **k)
                self.early_exit = False

            with monkeypatch.context() as m:
                m.setattr(decoder.ModelScorer, "__init__", no_early_exit)
                out = generate_speculative(be, batch, cfg, spec)
            assert out.token_ids == ref.token_ids and out.nfe == ref.nfe
            assert (out.stats.accepted, out.stats.rounds) == (ref.stats.accepted, ref.stats.rounds)
