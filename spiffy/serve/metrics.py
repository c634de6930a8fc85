"""Prometheus metrics of one server (its own registry, served at ``GET /metrics``)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("spiffy_requests", "Requests answered, by endpoint and HTTP status",
                                ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("spiffy_prompt_tokens", "Prompt tokens of answered requests", registry=r)
        self.generated_tokens = Counter("spiffy_generated_tokens", "Tokens generated for answered requests",
                                        registry=r)
        self.model_calls = Counter("spiffy_model_calls", "Model forward calls: NFE of each decoded batch (dLLM) "
                                   "or target calls (AR target)", registry=r)
        self.accepted = Histogram("spiffy_accepted_drafts_per_round", "Mean accepted drafts per verification round "
                                  "of a request", buckets=(0, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16), registry=r)
        self.queue_depth = Gauge("spiffy_queue_depth", "Requests waiting to be decoded", registry=r)
        self.running = Gauge("spiffy_running", "Requests being decoded", registry=r)
        self.batch_size = Histogram("spiffy_batch_size", "Requests decoded together", buckets=(1, 2, 4, 8, 16, 32),
                                    registry=r)
        self.latency = Histogram("spiffy_request_latency_seconds", "Time from arrival to the last token",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("spiffy_time_to_first_token_seconds", "Time from arrival to the first "
                                     "streamed token", buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("spiffy_queue_wait_seconds", "Time a request waited before decoding",
                                    buckets=LATENCY_BUCKETS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
