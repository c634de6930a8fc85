"""`spiffy bench --mode serve`: the server under load.

For each server configuration (batching on/off x acceleration on/off) a `spiffy serve` process is
started on 127.0.0.1; for each number of concurrent clients, every client sends its requests one
after another (chat completions, greedy, real prompts cycled) and the run records requests/s,
generated tokens/s and the p50/p95 latency. Every configuration must give every prompt the same
tokens (greedy decoding is exact under batching and under Spiffy/prompt lookup): the
``identical_rate`` column checks it against the first configuration.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from ..atomic import atomic_write_json, atomic_write_text
from ..errors import SpiffyError
from ..resources import CHECKOUT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A `spiffy serve` subprocess on a free loopback port (stopped with SIGTERM)."""

    def __init__(self, args: Sequence[str], threads: int = 1, start_timeout: float = 300):
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "spiffy", "serve", "--port", str(self.port), "--threads", str(threads),
               "--log-level", "warning", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
                                         str(CHECKOUT), os.environ.get("PYTHONPATH")]))))
        t0 = time.monotonic()
        while time.monotonic() - t0 < start_timeout:
            if self.proc.poll() is not None:
                raise SpiffyError(f"the server did not start: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise SpiffyError("the server did not answer /health in time")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def percentile(xs: list, q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def load(url: str, prompts: list, clients: int, per_client: int, max_tokens: int, extra: dict) -> dict:
    """``clients`` threads, each sending ``per_client`` requests in turn; returns timings and answers."""
    import httpx

    def client(i: int):
        out = []
        with httpx.Client(timeout=600) as c:
            for j in range(per_client):
                k = (i * per_client + j) % len(prompts)
                t0 = time.perf_counter()
                r = c.post(url + "/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": prompts[k]}], "max_tokens": max_tokens,
                    "temperature": 0, **extra})
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    raise SpiffyError(f"request failed with {r.status_code}: {r.text[:300]}")
                body = r.json()
                out.append((k, dt, body["spiffy"]["token_ids"], body["usage"]["completion_tokens"],
                            body["spiffy"]["batch_size"]))
        return out

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as ex:
        results = [x for part in ex.map(client, range(clients)) for x in part]
    wall = time.perf_counter() - t0
    lat = [r[1] for r in results]
    tokens = sum(r[3] for r in results)
    return {"clients": clients, "requests": len(results), "wall_s": round(wall, 3),
            "requests_per_s": round(len(results) / wall, 4), "tokens_per_s": round(tokens / wall, 3),
            "p50_s": round(percentile(lat, 0.5), 3), "p95_s": round(percentile(lat, 0.95), 3),
            "mean_batch": round(statistics.mean(r[4] for r in results), 3),
            "_answers": {r[0]: r[2] for r in results}}


def run_serve_bench(prompts: list, server_args: Sequence[str], configs: dict, clients: Sequence[int] = (1, 4, 16),
                    per_client: int = 4, max_tokens: int = 64, threads: int = 1,
                    say=lambda s: None) -> dict:
    """``configs``: {name: (extra server args, extra request fields)}. Returns {"rows": [...]}; each row one
    (configuration, clients) pair."""
    rows, reference = [], {}
    for name, (args, extra) in configs.items():
        srv = ServerProcess([*server_args, *args], threads=threads)
        try:
            load(srv.url, prompts[:1], 1, 1, max_tokens, extra)   # warm-up
            for c in clients:
                r = load(srv.url, prompts, c, per_client, max_tokens, extra)
                answers = r.pop("_answers")
                same = [answers[k] == reference[k] for k in answers if k in reference]
                reference.update({k: v for k, v in answers.items() if k not in reference})
                r.update(config=name, identical_rate=round(sum(same) / len(same), 4) if same else 1.0)
                rows.append(r)
                say(f"{name} clients={c}: {r['requests_per_s']} req/s, p50 {r['p50_s']} s, p95 {r['p95_s']} s, "
                    f"batch {r['mean_batch']}")
        finally:
            srv.stop()
    return {"rows": rows}


def markdown(result: dict) -> str:
    cols = ["config", "clients", "requests", "req/s", "tok/s", "p50 s", "p95 s", "mean batch", "identical"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        lines.append(f"| {r['config']} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.3f} | "
                     f"{r['tokens_per_s']:.1f} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['mean_batch']:.2f} | "
                     f"{100 * r['identical_rate']:.0f}% |")
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "serve_bench.json", result)
    atomic_write_text(out / "serve_bench.md", markdown(result))
    return {"json": str(out / "serve_bench.json"), "markdown": str(out / "serve_bench.md")}


def default_configs(kind: str, budget: int, strategy: Optional[str]) -> dict:
    if kind == "ar":
        acc = {"spiffy": {"strategy": strategy or "chain"}}
        return {"plain": ([], {"spiffy": {"strategy": "plain"}}), f"{strategy or 'chain'}": ([], acc)}
    return {"no batching, baseline": (["--no-batching"], {"spiffy": {"budget": 0}}),
            "batching, baseline": (["--batching"], {"spiffy": {"budget": 0}}),
            f"no batching, Spiffy D={budget}": (["--no-batching"], {"spiffy": {"budget": budget}}),
            f"batching, Spiffy D={budget}": (["--batching"], {"spiffy": {"budget": budget}})}
