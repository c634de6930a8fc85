"""The feature-reading block drafter (DFlash-style) for an AR target: lossless in every strategy, its feature
cache equal to one rebuilt from scratch, exact speculative sampling (chain and best-first tree), refusal of a
drafter trained for another target, and best-first trees that hold the most likely prefixes."""
import itertools
import warnings

import pytest
import torch

from spiffy.ar import generate_ar
from spiffy.ar.best_first import best_first_tree
from spiffy.ar.block_drafter import BlockDrafter
from spiffy.ar.decode import hf_generate
from spiffy.errors import ConfigError
from tests.ar_fixtures import tiny_target
from tests.block_fixtures import greedy_rows, tiny_drafter_model, trained_tiny_drafter

warnings.filterwarnings("ignore")


def _from_scratch(drafter, tokens: list, features):
    """The drafter's context cache built in one go for ``tokens`` and their target features (what the
    incremental cache must equal)."""
    from spiffy.ar.block_drafter import ContextCache

    cache = ContextCache()
    if tokens:
        cache.extend(tokens, drafter._kv(features, 0))
    return cache


@pytest.fixture(scope="module")
def pair():
    tgt = tiny_target(vocab=64, seed=1)
    return tgt, trained_tiny_drafter(tgt)


STRATEGIES = {"chain": dict(draft_length=4), "best-first": dict(draft_length=4, tree_nodes=8),
              "redraft": dict(draft_length=4, tree=2), "adaptive": dict(adaptive=True, min_draft=2, max_draft=4),
              "short-gamma": dict(draft_length=2)}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_greedy_identical_to_transformers_generate(pair, name):
    tgt, m = pair
    d = BlockDrafter(m, tgt)
    accepted = 0
    for k, row in enumerate(greedy_rows(tgt, 4, 5, 1, seed=11)):
        p = row["prompt"]
        ref = hf_generate(tgt, p, 24)
        r = generate_ar(tgt, d, p, max_new_tokens=24, gate=0.0, **STRATEGIES[name])
        assert r.token_ids == ref, (name, k)
        assert r.strategy.startswith("diffusion")
        accepted += sum(r.accepted)
    assert accepted > 0   # the drafts are accepted sometimes: the paths above were exercised


@pytest.mark.parametrize("name", ["chain", "best-first", "redraft"])
def test_unshifted_drafter_is_lossless_too(name):
    """The DFlash convention (each mask slot predicts its own token) decodes losslessly as well."""
    tgt = tiny_target(vocab=64, seed=1)
    d = BlockDrafter(trained_tiny_drafter(tgt, steps=60, shift=False), tgt)
    assert not d.model.cfg.shift
    for row in greedy_rows(tgt, 3, 5, 1, seed=12):
        p = row["prompt"]
        assert generate_ar(tgt, d, p, max_new_tokens=16, gate=0.0, **STRATEGIES[name]).token_ids == hf_generate(tgt, p, 16)


def test_drafting_reads_the_target_features(pair):
    """The drafts depend on the target's features: zeroed context features give other drafts."""
    tgt, m = pair
    d = BlockDrafter(m, tgt)
    st = tgt.new_state(d.feature_layers)
    d.attach(st)
    st.extend([3, 4, 5, 6, 7])
    a = d.draft([3, 4, 5, 6, 7, 8], 4).q
    st.features = torch.zeros_like(st.features)
    d.cache = type(d.cache)()
    b = d.draft([3, 4, 5, 6, 7, 8], 4).q
    assert not torch.allclose(a, b)


def _full_features(tgt, tokens):
    with torch.no_grad():
        out = tgt.model(torch.tensor([tokens]), output_hidden_states=True)
    return tgt.features_of(out.hidden_states, (0, 1))[0]


@pytest.mark.parametrize("kw", [dict(draft_length=4), dict(draft_length=4, tree_nodes=8)], ids=["chain", "tree"])
def test_feature_cache_equals_rebuilt(pair, kw):
    """After rounds of accepts and rejects (crop for chains, gather for trees) the target's kept features and
    the drafter's context cache equal those rebuilt from scratch on the committed text."""
    tgt, m = pair
    d = BlockDrafter(m, tgt)
    p = greedy_rows(tgt, 1, 5, 1, seed=5)[0]["prompt"]
    r = generate_ar(tgt, d, p, max_new_tokens=20, gate=0.0, **kw)
    assert any(0 < a < n for a, n in zip(r.accepted, r.drafted))   # some round was cut back
    st = d.state
    committed = (p + r.token_ids)[: st.length]
    assert st.tokens == committed
    assert torch.allclose(st.features, _full_features(tgt, committed), atol=1e-9)
    d.sync()
    fresh = _from_scratch(d, committed, _full_features(tgt, committed))
    assert d.cache.tokens == fresh.tokens
    for (k0, v0), (k1, v1) in zip(d.cache.kv, fresh.kv):
        assert torch.allclose(k0, k1, atol=1e-9) and torch.allclose(v0, v1, atol=1e-9)


def test_cache_cut_back_when_the_committed_text_changes(pair):
    tgt, m = pair
    d = BlockDrafter(m, tgt)
    st = tgt.new_state(d.feature_layers)
    d.attach(st)
    st.extend([1, 2, 3, 4, 5, 6])
    d.sync()
    assert len(d.cache) == 6
    st.crop(3)
    st.extend([9, 9])
    d.sync()
    fresh = _from_scratch(d, st.tokens, _full_features(tgt, st.tokens))
    assert d.cache.tokens == [1, 2, 3, 9, 9]
    for (k0, _), (k1, _) in zip(d.cache.kv, fresh.kv):
        assert torch.allclose(k0, k1, atol=1e-9)


def test_drafter_for_another_target_is_refused(pair, tmp_path):
    tgt, m = pair
    wider = tiny_target(vocab=64, seed=1, layers=2)
    wider.model.config.hidden_size = 48          # a model of another width
    with pytest.raises(ConfigError, match="trained for"):
        BlockDrafter(tiny_drafter_model(tgt), wider)
    other_vocab = tiny_target(vocab=80, seed=1, tokenizer=None)
    with pytest.raises(ConfigError, match="vocabulary"):
        BlockDrafter(tiny_drafter_model(tgt), other_vocab)
    same_shape = tiny_target(vocab=64, seed=2)
    with pytest.raises(ConfigError, match="weights differ"):
        BlockDrafter(tiny_drafter_model(tgt), same_shape)


def test_save_load_round_trip(pair, tmp_path):
    from spiffy.ar.block_model import BlockDrafterModel
    from spiffy.ar.pair import load_drafter_model, make_drafter

    tgt, m = pair
    m.save(tmp_path / "d", dtype=torch.float64)
    loaded = load_drafter_model(str(tmp_path / "d"), dtype="float64")
    assert isinstance(loaded, BlockDrafterModel)
    d = make_drafter(loaded, tgt)
    p = [3, 1, 4, 1, 5]
    a = generate_ar(tgt, BlockDrafter(m, tgt), p, max_new_tokens=12, gate=0.0)
    b = generate_ar(tgt, d, p, max_new_tokens=12, gate=0.0)
    assert a.token_ids == b.token_ids and a.accepted == b.accepted
    with pytest.raises(ConfigError, match="one forward"):
        make_drafter(loaded, tgt, steps=2)


def test_best_first_tree_holds_the_most_likely_prefixes():
    torch.manual_seed(0)
    q = torch.softmax(torch.randn(4, 5) * 2, -1)
    budget = 11
    tree, best = best_first_tree(q, budget, width=5)
    assert best == q.argmax(-1).tolist()
    paths = set()
    for j in range(len(tree)):
        path = tuple(tree.tokens[i] for i in tree.path_to(j))
        paths.add(path)
        assert tree.parents[j] < j
    score = {}
    for d in range(1, 5):
        for pre in itertools.product(range(5), repeat=d):
            score[pre] = float(sum(torch.log(q[i, t]) for i, t in enumerate(pre)))
    top = sorted(score, key=lambda k: -score[k])[:budget]
    assert len(paths) == budget
    assert sorted(score[p] for p in paths) == pytest.approx(sorted(score[p] for p in top))
    stop_tree, _ = best_first_tree(q, budget, stop_ids=[int(q[0].argmax())], width=5)
    first = int(q[0].argmax())
    assert all(stop_tree.tokens[stop_tree.parents[j]] != first for j in range(len(stop_tree))
               if stop_tree.parents[j] >= 0)


# ------------------------------------------------------------------ vocabulary shortlist
def _shortlisted(tgt, m, ids):
    """A runtime of ``m`` with this shortlist (the runtime copies it; the model is left without one)."""
    m.shortlist = list(ids)
    try:
        return BlockDrafter(m, tgt)
    finally:
        m.shortlist = None


def test_shortlist_scores_the_listed_and_the_seen_ids_only(pair):
    """With a shortlist the drafter's distribution is the full head's renormalised over shortlist + seen ids, zero
    elsewhere; the drafted tokens come from it; ids are added as the text brings them; reset starts over."""
    tgt, m = pair
    full, short = BlockDrafter(m, tgt), _shortlisted(tgt, m, range(10))
    assert full.shortlist is None and short.shortlist.tolist() == list(range(10))
    prefix = [11, 12, 13, 14, 15, 20]
    for d in (full, short):
        st = tgt.new_state(d.feature_layers)
        d.attach(st)
        st.extend(prefix[:-1])
    a, b = full.draft(prefix, 4), short.draft(prefix, 4)
    allowed = sorted(set(range(10)) | set(prefix))
    off = torch.ones(tgt.vocab_size, dtype=torch.bool)
    off[allowed] = False
    assert torch.all(b.q[:, off] == 0) and torch.allclose(b.q.sum(-1), torch.ones(len(b.tokens), dtype=b.q.dtype))
    want = a.q[:, allowed] / a.q[:, allowed].sum(-1, keepdim=True)
    assert torch.allclose(b.q[:, allowed], want, atol=1e-9)
    assert all(t in allowed for t in b.tokens) and b.tokens == [allowed[i] for i in want.argmax(-1).tolist()]
    assert torch.allclose(b.conf, b.q.gather(1, torch.tensor(b.tokens)[:, None])[:, 0])
    short.reset()
    assert short._rows is None


def test_shortlist_covering_everything_changes_nothing(pair):
    tgt, m = pair
    full, short = BlockDrafter(m, tgt), _shortlisted(tgt, m, range(tgt.vocab_size))
    for row in greedy_rows(tgt, 2, 5, 1, seed=13):
        a = generate_ar(tgt, full, row["prompt"], max_new_tokens=16, gate=0.0, draft_length=4, tree_nodes=8)
        b = generate_ar(tgt, short, row["prompt"], max_new_tokens=16, gate=0.0, draft_length=4, tree_nodes=8)
        assert a.token_ids == b.token_ids and a.accepted == b.accepted


@pytest.mark.parametrize("name", ["chain", "best-first", "redraft"])
def test_shortlisted_drafter_is_lossless(pair, name):
    """A shortlist of a few ids (the drafts are often off the target's choice) keeps the output the target's."""
    tgt, m = pair
    d = _shortlisted(tgt, m, range(0, tgt.vocab_size, 5))
    for row in greedy_rows(tgt, 3, 5, 1, seed=14):
        p = row["prompt"]
        assert generate_ar(tgt, d, p, max_new_tokens=16, gate=0.0, **STRATEGIES[name]).token_ids == hf_generate(tgt, p, 16)


def test_bad_shortlist_file_is_refused(pair, tmp_path):
    from spiffy.ar.block_model import BlockDrafterModel
    from spiffy.errors import ModelLoadError

    tgt, m = pair
    m.save(tmp_path, dtype=torch.float32)
    assert BlockDrafterModel.load(tmp_path).shortlist is None
    (tmp_path / "shortlist.json").write_text('{"format": "spiffy-shortlist/1", "ids": [1, 2, 3]}')
    assert BlockDrafterModel.load(tmp_path).shortlist == [1, 2, 3]
    for bad in ('{"format": "spiffy-shortlist/1", "ids": [1, 9999]}', '{"ids": [1]}', '{"format": "spiffy-shortl',
                '{"format": "spiffy-shortlist/1", "ids": []}'):
        (tmp_path / "shortlist.json").write_text(bad)
        with pytest.raises(ModelLoadError, match="shortlist"):
            BlockDrafterModel.load(tmp_path)


# ------------------------------------------------------------------ exact speculative sampling (chi-square)
V, NEW, PROMPT, TEMP, N = 3, 3, [0, 2, 1], 1.0, 300


@pytest.fixture(scope="module")
def small():
    tgt = tiny_target(vocab=V, seed=3, stop_ids=[], scale=2.0, tokenizer=None)
    m = tiny_drafter_model(tgt, block=4, seed=2)
    with torch.no_grad():
        m.norm.weight.mul_(30.0)   # a random drafter is near uniform: make its q clearly unlike the target's p
    return tgt, m


@pytest.mark.parametrize("kw", [dict(draft_length=2), dict(draft_length=2, drafter_temperature=0.2),
                                dict(draft_length=3, tree_nodes=4)], ids=["chain", "chain-sharp-q", "tree"])
def test_sampling_matches_target_distribution(small, kw):
    from tests.test_ar_sampling import exact_distribution, pvalue

    tgt, m = small
    d = BlockDrafter(m, tgt, temperature=kw.pop("drafter_temperature", TEMP))
    probs = exact_distribution(tgt)
    counts = {}
    for s in range(N):
        r = generate_ar(tgt, d, PROMPT, max_new_tokens=NEW, temperature=TEMP, seed=s, gate=0.0, **kw)
        counts[tuple(r.token_ids)] = counts.get(tuple(r.token_ids), 0) + 1
    p = pvalue(counts, probs, N)
    assert p > 1e-3
    again = generate_ar(tgt, d, PROMPT, max_new_tokens=NEW, temperature=TEMP, seed=4, gate=0.0, **kw).token_ids
    assert again == generate_ar(tgt, d, PROMPT, max_new_tokens=NEW, temperature=TEMP, seed=4, gate=0.0,
                                **kw).token_ids


def test_broken_acceptance_is_caught(small):
    from tests.test_ar_sampling import exact_distribution, pvalue

    tgt, m = small
    d = BlockDrafter(m, tgt, temperature=0.2)   # drafts from a sharpened q: accepting them all is visibly wrong
    counts = {}
    for s in range(N):
        r = generate_ar(tgt, d, PROMPT, max_new_tokens=NEW, temperature=TEMP, seed=s, gate=0.0, draft_length=2,
                        accept_rule="always")
        counts[tuple(r.token_ids)] = counts.get(tuple(r.token_ids), 0) + 1
    assert pvalue(counts, exact_distribution(tgt), N) < 1e-3


# ------------------------------------------------------------------ CLI: sample and bench with a block drafter
@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("block-cli")
    t = tiny_target(dtype=torch.float32)
    t.model.save_pretrained(d / "target")
    t.tokenizer.save_pretrained(d / "target")
    trained_tiny_drafter(t, steps=60).save(d / "drafter", dtype=torch.float32)
    return d / "target", d / "drafter"


def test_cli_sample_and_bench_with_block_drafter(dirs, tmp_path):
    import json

    from click.testing import CliRunner

    from spiffy.ar import load_causal_lm
    from spiffy.cli import main

    target, drafter = dirs
    r = CliRunner().invoke(main, ["sample", "--target", str(target), "--drafter", str(drafter), "--prompt", "hello",
                                  "--raw", "--gen-length", "12", "--json"])
    assert r.exit_code == 0, r.output
    line = [x for x in r.output.splitlines() if '{"model"' in x][-1]
    out = json.loads(line[line.index('{"model"'):])
    assert out["token_ids"] == hf_generate(load_causal_lm(str(target)), out["prompt_ids"], 12)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "abc"}\n{"prompt": "what is 1+1?"}\n')
    r = CliRunner().invoke(main, ["bench", "--mode", "ar", "--target", str(target), "--block-drafter", str(drafter),
                                  "--strategies", "diffusion,diffusion+tree,diffusion+adaptive,diffusion+redraft",
                                  "--tree-nodes", "6", "--dataset", str(prompts), "--gen-length", "10", "--raw",
                                  "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "bench.json").read_text())
    names = {row["strategy"] for row in res["rows"]}
    assert names == {"plain", "hf_generate", "diffusion", "diffusion+tree", "diffusion+adaptive", "diffusion+redraft"}
    assert all(row["identical_rate"] == 1.0 for row in res["rows"])
    assert res["args"]["configs"]["diffusion+tree"]["tree_nodes"] == 6
    r = CliRunner().invoke(main, ["bench", "--mode", "ar", "--target", str(target), "--strategies", "diffusion",
                                  "--dataset", str(prompts), "--raw", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "--block-drafter" in r.output


def test_train_recipe_end_to_end_and_resume(tmp_path, monkeypatch):
    """`spiffy train --recipe` of kind block-drafter on a tiny target: answers, features, a few steps, an
    exported folder that loads as a drafter for that target; a second run continues the saved state."""
    import json

    from click.testing import CliRunner

    from spiffy.ar import load_causal_lm
    from spiffy.ar.pair import load_drafter_model, make_drafter
    from spiffy.cli import main

    monkeypatch.setenv("SPIFFY_CACHE", str(tmp_path / "cache"))
    t = tiny_target(dtype=torch.float32)
    t.model.save_pretrained(tmp_path / "target")
    t.tokenizer.save_pretrained(tmp_path / "target")
    (tmp_path / "data" / "gsm8k").mkdir(parents=True)
    rows = [{"question": f"what is {i} and {i + 1}?", "answer": "x"} for i in range(8)]
    (tmp_path / "data" / "gsm8k" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {"name": "tiny-drafter", "kind": "block-drafter", "target": str(tmp_path / "target"), "seed": 0,
              "answers": {"sources": {"gsm8k": 8}, "heldout": 2, "max_prompt": 64, "max_new_tokens": 12, "batch": 4},
              "drafter": {"layers": 1, "block": 4, "target_layers": [0, 1]}, "threads": 1, "steps": 4,
              "batch_size": 2, "anchors": 2, "lr": 1e-3, "warmup": 1, "save_dtype": "fp32",
              "eval": {"every_minutes": 100}, "log_every": 1, "checkpoint_minutes": 100}
    rp = tmp_path / "r.json"
    rp.write_text(json.dumps(recipe))
    out = tmp_path / "out"
    args = ["train", "--recipe", str(rp), "--data-dir", str(tmp_path / "data"), "--out", str(out)]
    r = CliRunner().invoke(main, args + ["--max-steps", "2"])
    assert r.exit_code == 0, r.output
    tr = json.loads((out / "training.json").read_text())
    assert tr["step"] == 2 and tr["heldout_rows"] == 2 and (out / "README.md").exists()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    tr = json.loads((out / "training.json").read_text())
    assert tr["step"] == 4 and [x["start_step"] for x in tr["runs"]] == [0, 2]
    tgt = load_causal_lm(str(tmp_path / "target"))
    d = make_drafter(load_drafter_model(str(out)), tgt)
    p = tgt.encode_prompt("what is 3 and 4?")
    assert generate_ar(tgt, d, p, max_new_tokens=8).token_ids == hf_generate(tgt, p, 8)
