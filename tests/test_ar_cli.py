"""`spiffy sample --target …` and `spiffy bench --mode ar` on tiny checkpoints."""
import json
import warnings

import pytest
import torch
from click.testing import CliRunner

from tests.ar_fixtures import tiny_target
from spiffy.cli import main

warnings.filterwarnings("ignore")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-target")
    t = tiny_target(dtype=torch.float32)
    t.model.save_pretrained(d)
    t.tokenizer.save_pretrained(d)
    return d


def _json(out: str) -> dict:
    line = [l for l in out.splitlines() if '{"model"' in l][-1]
    return json.loads(line[line.index('{"model"'):])


def test_sample_ar_json(target_dir):
    from spiffy.ar import hf_generate, load_causal_lm

    r = CliRunner().invoke(main, ["sample", "--target", str(target_dir), "--drafter", "tiny-llada", "--prompt",
                                  "hello", "--raw", "--gen-length", "12", "--tree", "2", "--json"])
    assert r.exit_code == 0, r.output
    out = _json(r.output)
    for k in ("prompt_ids", "token_ids", "text", "nfe", "wall_s", "target_calls", "drafter_calls", "mean_accepted"):
        assert k in out
    tgt = load_causal_lm(str(target_dir))
    assert out["token_ids"] == hf_generate(tgt, out["prompt_ids"], 12)


def test_sample_ar_errors(target_dir):
    r = CliRunner().invoke(main, ["sample", "--target", str(target_dir), "--drafter", "tiny-llada", "--prompt",
                                  "hi", "--draft-length", "0"])
    assert r.exit_code == 2 and "γ" in r.output
    r = CliRunner().invoke(main, ["sample", "--target", str(target_dir), "--drafter", "tiny-llada", "--prompt",
                                  "hi", "--draft-length", "4", "--adaptive"])
    assert r.exit_code == 2 and "not both" in r.output


def test_bench_ar(target_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "abc"}\n{"prompt": "what is 1+1?"}\n')
    r = CliRunner().invoke(main, ["bench", "--mode", "ar", "--target", str(target_dir), "--model", "tiny-dream",
                                  "--strategies", "dllm,adaptive,tree", "--min-draft", "3", "--max-draft", "6",
                                  "--dataset", str(prompts), "--gen-length", "10", "--raw",
                                  "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert {row["strategy"] for row in res["rows"]} == {"plain", "hf_generate", "dllm", "adaptive", "tree"}
    assert all(row["identical_rate"] == 1.0 for row in res["rows"])
    assert (tmp_path / "out" / "bench.md").exists()


def test_bench_ar_lookup_rows(target_dir, tmp_path):
    """The side-by-side table: plain, transformers generate and prompt lookup, and this project's
    prompt-lookup strategies, with the row keys the README promises."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "abcabc abcabc"}\n{"prompt": "one two one two"}\n')
    from spiffy.ar.ngram import NGramModel, tokenizer_fingerprint
    from spiffy.backends.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in ("abc abc abc", "one two three")]
    NGramModel.from_sequences(seqs, len(tok), fingerprint=tokenizer_fingerprint(tok)).save(tmp_path / "tiny.npz")
    r = CliRunner().invoke(main, ["bench", "--mode", "ar", "--target", str(target_dir),
                                  "--strategies", "ngram,ngram+nogate,ngram+tree,ngram+path,hf_prompt_lookup",
                                  "--hf-lookup-tokens", "2,4", "--dataset", str(prompts), "--gen-length", "12",
                                  "--ngram", str(tmp_path / "tiny.npz"), "--raw", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "bench.json").read_text())
    names = [row["strategy"] for row in res["rows"]]
    assert set(names) == {"plain", "hf_generate", "hf_prompt_lookup[k=2]", "hf_prompt_lookup[k=4]", "ngram",
                          "ngram+nogate", "ngram+tree", "ngram+path", "hf_prompt_lookup"}
    for row in res["rows"]:
        for k in ("strategy", "dataset", "tokens_per_target_call", "wall_ratio_median", "identical_rate"):
            assert k in row
        assert row["identical_rate"] == 1.0
    plain = next(row for row in res["rows"] if row["strategy"] == "plain")
    assert plain["tokens_per_target_call"] == 1.0 and plain["wall_ratio_median"] == 1.0
    hf = next(row for row in res["rows"] if row["strategy"] == "hf_generate")
    assert hf["tokens_per_target_call"] == 1.0      # forwards counted by a hook on the model
    assert (tmp_path / "out" / "bench.md").exists() and (tmp_path / "out" / "bench.png").exists()
    assert not list((tmp_path / "out").glob(".*"))   # no temporary files left


def test_bench_ar_bad_options(target_dir, tmp_path):
    for args, msg in ((["--strategies", "ngram,warp"], "unknown strategies"),
                      (["--strategies", "hf_prompt_lookup", "--hf-lookup-tokens", "3,x"], "comma-separated")):
        r = CliRunner().invoke(main, ["bench", "--mode", "ar", "--target", str(target_dir), "--dataset", "x.jsonl",
                                      *args])
        assert r.exit_code == 2 and msg in r.output, r.output
