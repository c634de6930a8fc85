"""`spiffy serve` as a real server process on 127.0.0.1, called with the official `openai` client and
httpx: answers equal the offline API's, concurrent clients get their own answers, bad input gets
OpenAI-style errors, a full queue answers 429, a client that leaves frees its slot, SIGTERM drains."""
import concurrent.futures as cf
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

openai = pytest.importorskip("openai")

import spiffy  # noqa: E402
from spiffy import GenerationConfig  # noqa: E402
from spiffy.speculative import SpeculativeConfig  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args, wait: float = 120):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        self.proc = subprocess.Popen([sys.executable, "-m", "spiffy", "serve", "--port", str(self.port), "--threads", "1",
                                      "--log-level", "warning", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.communicate()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not start")

    def client(self):
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=120)

    def post(self, path: str, body, **kw) -> httpx.Response:
        if isinstance(body, (dict, list)):
            return httpx.post(self.url + path, json=body, timeout=kw.pop("timeout", 120), **kw)
        return httpx.post(self.url + path, content=body, headers={"content-type": "application/json"}, timeout=120)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def server():
    s = Server("--max-queue", "64", "--max-batch", "8", "--block-length", "16", "--max-tokens-limit", "64")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def ref():
    torch.set_num_threads(1)
    return spiffy.load_backend(None)


def offline(backend, prompt: str, settings: dict, n: int, chat: bool = True) -> list:
    cfg = GenerationConfig(**settings["generation"])
    spec = SpeculativeConfig(budget=settings["spiffy_budget"], verify=settings["verify"]) if settings["spiffy_budget"] \
        else None
    return spiffy.generate(backend, prompt, cfg, speculative=spec, chat=chat).token_ids[0][:n]


MODEL = "spiffy-dllm-ref"
PROMPTS = ["What is 7 times 8?", "Write a function that adds two numbers.", "Name three colours.",
           "Janet has 3 apples and buys 5 more. How many apples does she have?", "hello", "Explain a for loop.",
           "What is the capital of France?", "Sort the list [3, 1, 2]."]


def test_chat_completion_and_stream_equal_offline(server, ref):
    c = server.client()
    r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=20)
    ext = r.model_extra["spiffy"]
    assert r.choices[0].message.role == "assistant" and r.usage.completion_tokens <= 20
    assert ext["token_ids"][:20] == offline(ref, PROMPTS[0], ext["settings"], 20)
    assert r.choices[0].message.content == ref.decode(ext["token_ids"][:20])
    # streaming: the concatenated deltas are the same answer; the last chunk carries the token ids
    chunks = list(c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=20,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == r.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == r.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_stream_sends_each_block_when_final(server, ref):
    """48 tokens in blocks of 16: the text arrives in several chunks, not all at the end."""
    c = server.client()
    chunks = list(c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=48, stream=True,
                                       extra_body={"spiffy": {"raw": True}}))
    pieces = [ch.choices[0].text for ch in chunks if ch.choices and ch.choices[0].text]
    final = chunks[-1].model_extra["spiffy"]
    assert final["token_ids"] == offline(ref, "Once upon a time", final["settings"], 48, chat=False)
    if ref.eos_id not in final["token_ids"][:32]:
        assert len(pieces) >= 2


def test_completion_spiffy_and_sampling_equal_offline(server, ref):
    c = server.client()
    for extra, temp, seed in [({"budget": 3}, 0.0, None), ({"budget": 0}, 0.8, 11), ({"budget": 5}, 0.8, 11),
                              ({"threshold": 0.5, "cache": "dual", "budget": 3}, 0.0, None)]:
        kw = {"temperature": temp} if temp else {}
        if seed is not None:
            kw["seed"] = seed
        r = c.completions.create(model=MODEL, prompt=PROMPTS[3], max_tokens=32, extra_body={"spiffy": extra}, **kw)
        ext = r.model_extra["spiffy"]
        assert ext["settings"]["spiffy_budget"] == extra["budget"]
        assert ext["token_ids"] == offline(ref, PROMPTS[3], ext["settings"], 32, chat=False), extra
    # the same seed twice: the same tokens; another seed: (almost surely) others
    a = c.completions.create(model=MODEL, prompt=PROMPTS[3], max_tokens=32, temperature=1.0, seed=5)
    b = c.completions.create(model=MODEL, prompt=PROMPTS[3], max_tokens=32, temperature=1.0, seed=5)
    assert a.model_extra["spiffy"]["token_ids"] == b.model_extra["spiffy"]["token_ids"]


def test_stop_strings_cut_the_answer(server, ref):
    c = server.client()
    full = c.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=48).choices[0].text
    if len(full) < 4:
        pytest.skip("answer too short to cut")
    stop = full[2:4]
    r = c.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=48, stop=[stop])
    assert r.choices[0].text == full[:full.find(stop)] and r.choices[0].finish_reason == "stop"
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=48, stop=stop,
                                                                         stream=True) if ch.choices)
    assert streamed == r.choices[0].text


def test_concurrent_clients_get_their_own_offline_answers(server, ref):
    """16 clients x 4 requests at once (mixed prompts, seeds and budgets): every request is answered
    with exactly its offline tokens; batches of equal settings are formed."""
    jobs = [(i, j) for i in range(16) for j in range(4)]

    def ask(ij):
        i, j = ij
        c = server.client()
        prompt = PROMPTS[(i + j) % len(PROMPTS)]
        kw = {"temperature": 0.7, "seed": i} if j == 3 else {}
        extra = {"budget": 3} if j == 2 else {}
        r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=16,
                                      extra_body={"spiffy": extra}, **kw)
        return prompt, r.model_extra["spiffy"]

    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(ask, jobs))
    assert time.monotonic() - t0 < 300
    assert len(answers) == 64
    for prompt, ext in answers:
        assert ext["token_ids"] == offline(ref, prompt, ext["settings"], 16)
    assert max(ext["batch_size"] for _, ext in answers) > 1
    metrics = httpx.get(server.url + "/metrics").text
    assert "spiffy_batch_size_bucket" in metrics and "spiffy_request_latency_seconds_count" in metrics


def _error(r: httpx.Response, status: int):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"} and body["error"]["message"]
    assert "Traceback" not in r.text
    return body["error"]


def test_bad_input_gets_its_status_and_error_object(server):
    msg = [{"role": "user", "content": "hi"}]
    _error(server.post("/v1/chat/completions", b'{"messages": [}'), 400)
    assert _error(server.post("/v1/chat/completions", {"messages": msg, "model": "gpt-5"}), 404)["code"] == \
        "model_not_found"
    _error(server.post("/v1/chat/completions", {"messages": msg, "max_tokens": 65}), 422)
    assert _error(server.post("/v1/completions", {"prompt": "word " * 5000, "max_tokens": 8}), 413)["code"] == \
        "context_length_exceeded"
    assert _error(server.post("/v1/chat/completions", {"messages": msg, "temperature": -0.5}), 422)["param"] == \
        "temperature"
    assert _error(server.post("/v1/chat/completions", {"messages": msg, "frobnicate": 1}), 422)["param"] == "frobnicate"
    _error(server.post("/v1/chat/completions", {"messages": msg, "spiffy": {"budget": 99}}), 422)
    _error(server.post("/v1/chat/completions", {"messages": msg, "spiffy": {"speed": "max"}}), 422)
    _error(server.post("/v1/chat/completions", {"messages": []}), 422)
    _error(server.post("/v1/chat/completions", {"messages": msg, "n": 2}), 422)
    _error(server.post("/v1/chat/completions", [1, 2]), 422)
    _error(httpx.get(server.url + "/v1/nothing"), 404)
    with pytest.raises(openai.NotFoundError):
        server.client().chat.completions.create(model="gpt-5", messages=msg)
    assert httpx.get(server.url + "/health").json()["status"] == "ok"   # still serving


def test_full_queue_answers_429_and_a_departed_client_frees_its_slot():
    s = Server("--max-queue", "2", "--max-batch", "1", "--max-tokens-limit", "256")
    try:
        req = {"messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 64}
        with cf.ThreadPoolExecutor(12) as ex:
            rs = list(ex.map(lambda _: s.post("/v1/chat/completions", req), range(12)))
        codes = sorted(r.status_code for r in rs)
        assert set(codes) == {200, 429} and codes.count(200) >= 3, codes
        busy = [r for r in rs if r.status_code == 429]
        assert all(int(r.headers["Retry-After"]) >= 1 for r in busy)
        assert busy[0].json()["error"]["type"] == "rate_limit_error"
        assert len({json.dumps(r.json()["spiffy"]["token_ids"]) for r in rs if r.status_code == 200}) == 1
        # one request decoding (256 tokens, ~10 s here), two waiting (the queue is full); the two waiting
        # clients give up ...
        with cf.ThreadPoolExecutor(3) as ex:
            first = ex.submit(s.post, "/v1/chat/completions", dict(req, max_tokens=256))
            time.sleep(1.0)
            gone = [ex.submit(s.post, "/v1/chat/completions", req, timeout=1.0) for _ in range(2)]
            for g in gone:
                with pytest.raises(httpx.TimeoutException):
                    g.result()
            time.sleep(1.5)
            # ... so their slots are free again while the first one still decodes
            health = httpx.get(s.url + "/health").json()
            assert health["queue_depth"] == 0 and (health["running"] == 1 or first.done())
            late = s.post("/v1/chat/completions", dict(req, max_tokens=8))
            assert late.status_code == 200
            assert first.result().status_code == 200
    finally:
        s.stop()


def test_sigterm_drains_in_flight_requests():
    s = Server("--max-tokens-limit", "128")
    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(s.post, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 128})
        time.sleep(1.0)
        s.proc.send_signal(signal.SIGTERM)
        r = fut.result()
    assert r.status_code == 200 and len(r.json()["spiffy"]["token_ids"]) == 128
    assert s.proc.wait(30) == 0


def test_client_leaving_mid_stream_stops_its_decode():
    """A stream of 512 tokens (16 blocks of 32, ~20 s on this CPU) whose client leaves after the first
    block: the decode stops at the next block and the server is idle again within seconds."""
    s = Server("--max-tokens-limit", "512", "--max-batch", "1")
    try:
        with httpx.Client(timeout=120) as c:
            prompt = "A farmer has 12 cows and buys 7 more. Then 4 cows are sold. How many cows are left?"
            with c.stream("POST", s.url + "/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": prompt}], "max_tokens": 512, "stream": True}) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data: ") and '"content": "' in line and '"content": ""' not in line:
                        assert '"finish_reason": null' in line   # the answer goes on: the decode is not over
                        break
            t0 = time.monotonic()
        while httpx.get(s.url + "/health").json()["running"] and time.monotonic() - t0 < 15:
            time.sleep(0.1)
        health = httpx.get(s.url + "/health").json()
        assert health["running"] == 0 and health["queue_depth"] == 0
        assert time.monotonic() - t0 < 8
        assert s.post("/v1/completions", {"prompt": "hi", "max_tokens": 8}).status_code == 200
    finally:
        s.stop()


def test_ar_target_server_equals_generate_ar():
    """SmolLM2-135M-Instruct served with prompt lookup: chat answers (chain, tree, plain) equal
    generate_ar's offline tokens, and a stream sends each verification round's tokens."""
    from spiffy.ar import generate_ar, load_causal_lm
    from spiffy.ar.decode import ARDecodeConfig
    from spiffy.ar.pair import make_drafter
    from spiffy.named_models import fetch

    fetch("smollm2-135m-instruct", progress=print)   # a no-op when .ci/run already prepared it
    s = Server("--target", "smollm2-135m-instruct", "--max-tokens-limit", "64")
    try:
        target = load_causal_lm("smollm2-135m-instruct")
        c = s.client()
        prompt = "Write a Python function that returns the sum of a list of numbers."
        for strategy in ("chain", "tree", "plain"):
            r = c.chat.completions.create(model=target.name, messages=[{"role": "user", "content": prompt}],
                                          max_tokens=40, extra_body={"spiffy": {"strategy": strategy}})
            ext = r.model_extra["spiffy"]
            cfg = ARDecodeConfig(**ext["settings"]["ar"])
            drafter = None if strategy == "plain" else make_drafter("ngram", target, temperature=cfg.temperature)
            assert ext["token_ids"] == generate_ar(target, drafter, prompt, cfg).token_ids, strategy
            assert r.choices[0].message.content == target.decode(ext["token_ids"])
        chunks = list(c.chat.completions.create(model=target.name, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=40, stream=True))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == target.decode(chunks[-1].model_extra["spiffy"]["token_ids"])
        assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) >= 3
        bad = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                              "spiffy": {"budget": 3}})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "spiffy.budget"
    finally:
        s.stop()
