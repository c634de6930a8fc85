"""Data-parallel calibrate and bench (spiffy.distributed): 2 gloo ranks on 127.0.0.1 give the artifacts
of one process; a killed rank stops the job cleanly and --resume finishes it."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from spiffy.cli import main
from spiffy.distributed import DistributedError, ShardFiles, World, map_prompts, shard_spans

TIMING = {"base_wall_s", "wall_s", "model_s", "drafting_s", "bookkeeping_s", "per_prompt_wall_ratio", "wall_ratio",
          "wall_ratio_median", "base_tokens_per_s", "tokens_per_s", "tokens_per_s_gain_vs_vanilla", "overhead_share"}


# ---- in-process pieces -----------------------------------------------------------------------------
def test_shard_spans_cover_every_item_once():
    assert shard_spans(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert shard_spans(0, 3) == []
    with pytest.raises(DistributedError, match="at least 1"):
        shard_spans(5, 0)


def test_resume_reuses_saved_shards_and_ignores_foreign_or_torn_ones(tmp_path, capsys):
    calls = []

    def fn(x):
        calls.append(x)
        return x * x

    files = ShardFiles(tmp_path / "job", "key-a")
    assert map_prompts(World(), list(range(7)), fn, shard_size=3, shards=files) == [x * x for x in range(7)]
    assert files.done() == [0, 1, 2] and len(calls) == 7
    calls.clear()
    assert map_prompts(World(), list(range(7)), fn, shard_size=3, shards=files, resume=True) == [x * x for x in range(7)]
    assert calls == [] and "reused 3 of 3 shards" in capsys.readouterr().err
    # a shard of another job (key), a torn file, and a shard cut differently are all computed again
    ShardFiles(tmp_path / "job", "key-b").save(0, (0, 3), [-1, -1, -1])
    files.path(1).write_bytes(b"not a torch file")
    files.save(2, (6, 8), [0, 0])
    assert map_prompts(World(), list(range(7)), fn, shard_size=3, shards=files, resume=True) == [x * x for x in range(7)]
    assert calls == list(range(7)) and "unreadable" in capsys.readouterr().err
    assert not [p for p in (tmp_path / "job").iterdir() if p.name.startswith(".")]   # no temporary left


def test_without_resume_saved_shards_are_recomputed(tmp_path):
    files = ShardFiles(tmp_path / "job", "k")
    files.save(0, (0, 2), ["stale", "stale"])
    assert map_prompts(World(), [1, 2], str, shard_size=2, shards=files) == ["1", "2"]


def test_world_size_without_rendezvous_is_refused(monkeypatch):
    from spiffy.distributed import init_world

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(DistributedError, match="torchrun"):
        init_world()


# ---- real ranks --------------------------------------------------------------------------------------
def _env(cache: Path) -> dict:
    env = dict(os.environ, SPIFFY_CACHE=str(cache), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def torchrun(n: int, args: list, cache: Path, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), "-m", "spiffy",
           *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(cache), capture_output=True, text=True, timeout=timeout)


def run_here(args: list, cache: Path, monkeypatch):
    monkeypatch.setenv("SPIFFY_CACHE", str(cache))
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return r


def prompt_file(tmp_path: Path, n: int) -> Path:
    p = tmp_path / f"p{n}.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"prompt {i}: " + "ab " * (i % 5)}) + "\n" for i in range(n)))
    return p


def set_files(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            data = f.read_bytes()
            if f.name == "report.json":
                rep = json.loads(data)
                rep.pop("wall_s")
                data = json.dumps(rep, sort_keys=True).encode()
            out[str(f.relative_to(folder))] = data
    return out


def calibrate_args(prompts: Path, out: Path, n: int, gen: int = 16, extra=()) -> list:
    return ["calibrate", "--model", "tiny-llada", "--dataset", str(prompts), "--limit", str(n), "--budgets", "2,3",
            "--gen-length", str(gen), "--block-length", "8", "--raw", "--out", str(out), "--shard-size", "3", *extra]


def test_two_ranks_calibrate_equals_one_process(tmp_path, monkeypatch):
    """11 calibration + 5 held-out prompts in shards of 3: rank 0 traces 9, rank 1 traces 7."""
    prompts = prompt_file(tmp_path, 11)
    one = tmp_path / "one"
    run_here(calibrate_args(prompts, one, 11, extra=["--heldout", str(prompts), "--heldout-limit", "5"]),
             tmp_path / "c1", monkeypatch)
    r = torchrun(2, calibrate_args(prompts, tmp_path / "two", 11, extra=["--heldout", str(prompts),
                                                                           "--heldout-limit", "5"]),
                 tmp_path / "c2", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = set_files(one), set_files(tmp_path / "two")
    assert {"tiny-llada/b8_k1_g16_none/D2.json", "tiny-llada/b8_k1_g16_none/counts.json"} <= set(a)
    assert a == b
    assert r.stdout.count("wrote ") == 1                     # only rank 0 reports
    assert not any((tmp_path / "c2" / "work").glob("*/shard-*.pt"))   # saved shards cleared on success


def test_two_ranks_bench_equals_one_process(tmp_path, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("what is two plus two?\nadd the numbers\nhello\nsay more\nfive\n")
    args = ["bench", "--model", "tiny-llada", "--dtype", "fp64", "--dataset", str(prompts), "--gen-length", "16",
            "--block-length", "8", "--budgets", "1,3", "--cache", "none", "--threshold", "0.5", "--predict", "--raw",
            "--shard-size", "2"]
    run_here(args + ["--out", str(tmp_path / "one")], tmp_path / "c1", monkeypatch)
    r = torchrun(2, args + ["--out", str(tmp_path / "two")], tmp_path / "c2", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "one" / "tokens.jsonl").read_bytes() == (tmp_path / "two" / "tokens.jsonl").read_bytes()
    a, b = (json.loads((tmp_path / d / "bench.json").read_text()) for d in ("one", "two"))
    strip = lambda rows: [{k: v for k, v in row.items() if k not in TIMING} for row in rows]   # noqa: E731
    assert strip(a["rows"]) == strip(b["rows"]) and len(a["rows"]) == 4
    assert a["machine"]["ranks"] == 1 and b["machine"]["ranks"] == 2
    assert all(row["identical_rate"] == 1.0 and row["predicted_equals_measured"] for row in b["rows"])


def _wait_for_shard(work: Path, odd: bool, proc, limit: float = 120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        found = [p for p in work.glob("*/shard-*.pt") if int(p.stem.split("-")[1]) % 2 == int(odd)]
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"the job ended before a shard was saved: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("no shard saved in time")


def _rank_pid(cache: Path, rank: int) -> int:
    """The pid of the worker with RANK=rank among this test's processes (matched by SPIFFY_CACHE)."""
    mark = f"SPIFFY_CACHE={cache}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in env and f"RANK={rank}".encode() in env and b"LOCAL_RANK=%d" % rank in env:
            return int(d.name)
    raise AssertionError(f"no worker with RANK={rank}")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_killed_rank_fails_the_job_and_resume_finishes_it(tmp_path, monkeypatch):
    prompts = prompt_file(tmp_path, 24)
    cache = tmp_path / "c"
    out = tmp_path / "cal"
    args = calibrate_args(prompts, out, 24, gen=64)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "spiffy", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    _wait_for_shard(cache / "work", odd=True, proc=proc)        # rank 1 has finished a shard and goes on
    os.kill(_rank_pid(cache, 1), signal.SIGKILL)                # as the OOM killer would
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "rank" in log and ": 1" in log, log[-3000:]          # torchrun's summary names the failed rank
    assert not out.exists() or not any(out.rglob("*")), "a failed job wrote part of a calibration set"
    saved = list((cache / "work").glob("*/shard-*.pt"))
    assert saved

    r = torchrun(2, args + ["--resume"], cache, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reused" in r.stderr
    run_here(args[:args.index("--out") + 1] + [str(tmp_path / "ref")] + args[args.index("--out") + 2:],
             tmp_path / "c1", monkeypatch)
    assert set_files(out) == set_files(tmp_path / "ref")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_heartbeat_names_a_vanished_rank_without_torchrun(tmp_path):
    """Two ranks started by hand (no launcher to tear the job down): rank 0 notices that rank 1 is gone
    within --dist-timeout, exits non-zero naming it, and writes nothing."""
    prompts = prompt_file(tmp_path, 24)
    cache = tmp_path / "c"
    out = tmp_path / "cal"
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = dict(_env(cache), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-m", "spiffy", *calibrate_args(prompts, out, 24, gen=64),
                                       "--dist-timeout", "3"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        _wait_for_shard(cache / "work", odd=True, proc=procs[1])
        procs[1].kill()
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=90)
        assert procs[0].returncode != 0
        assert "rank 1 stopped responding" in err, err[-2000:]
        assert time.monotonic() - t0 < 60
        assert not out.exists() or not any(out.rglob("*"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
