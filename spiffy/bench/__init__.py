"""Benchmarks: ``dllm`` (baseline vs Spiffy on the same prompts), ``machine`` (what ran it).
The AR-target benchmark lives in ``spiffy.bench.ar`` (``spiffy bench --mode ar``)."""
