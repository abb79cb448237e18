"""Prometheus metrics, one registry per app (so that tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tapo_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r)
        self.in_flight = Gauge("tapo_requests_in_flight", "Generation requests running now", registry=r)
        self.ttft = Histogram("tapo_time_to_first_token_seconds", "Time to the first model token", ["endpoint"],
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("tapo_request_seconds", "Whole generation request time", ["endpoint"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("tapo_tokens", "Tokens by kind (prompt, completion = model, injected = tool output)",
                              ["kind"], registry=r)
        self.tool_calls = Counter("tapo_tool_calls", "Tool calls by tool and outcome", ["tool", "outcome"], registry=r)
        self.tool_latency = Histogram("tapo_tool_seconds", "Tool call latency", ["tool"], buckets=_LATENCY_BUCKETS,
                                      registry=r)

    def count_usage(self, prompt: int, completion: int, injected: int = 0) -> None:
        self.tokens.labels("prompt").inc(prompt)
        self.tokens.labels("completion").inc(completion)
        self.tokens.labels("injected").inc(injected)
