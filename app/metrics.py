"""Prometheus metrics of one app instance (own registry, bounded label values)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """All metrics the service exports, registered on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("wbvae_http_requests", "HTTP requests by route, method and status code.",
                                ["route", "method", "status"], registry=self.registry)
        self.request_duration = Histogram("wbvae_http_request_duration_seconds", "Whole-request latency.",
                                          ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference_duration = Histogram("wbvae_inference_duration_seconds",
                                            "Model estimate plus full-resolution mapping, per photo.",
                                            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("wbvae_corrections_in_flight", "Corrections being processed.",
                               registry=self.registry)
        self.model_ready = Gauge("wbvae_model_ready", "1 once the model is loaded and warmed up.",
                                 registry=self.registry)
        self.model_info = Info("wbvae_model", "Served checkpoint and device.", registry=self.registry)
