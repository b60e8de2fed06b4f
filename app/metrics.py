"""Prometheus metrics of one app instance (own registry, bounded label values)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
MEGAPIXEL_BUCKETS = (0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 50.0, 100.0)
STAGES = ("decode", "model", "mapping", "encode")
CCT_BUCKETS = (2000, 2500, 3000, 3500, 4000, 4500, 5000, 5500, 6000, 6500, 7500, 9000, 12000, 20000)
DEAD_ZONE_DECISIONS = ("inside", "outside", "off")
ADAPTATIONS = ("full", "natural")
REJECT_REASONS = (
    "queue_full",
    "timeout",
    "gpu_oom",
    "client_gone",
    "upload_budget",
    "shutting_down",
    "unsent_answers",
    "disk_full",
)


class Metrics:
    """All metrics the service exports, registered on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "wbvae_http_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "wbvae_http_request_duration_seconds",
            "Whole-request latency.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_duration = Histogram(
            "wbvae_inference_duration_seconds",
            "Model estimate plus full-resolution mapping, per photo.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_duration = Histogram(
            "wbvae_stage_duration_seconds",
            "Time per correction stage: decode, model, mapping, encode.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.input_megapixels = Histogram(
            "wbvae_input_megapixels",
            "Size of decoded uploads in megapixels.",
            buckets=MEGAPIXEL_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "wbvae_model_batch_size",
            "Photos per model forward (micro-batching).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.illuminant_cct = Histogram(
            "wbvae_illuminant_cct_kelvin",
            "Correlated colour temperature of the scene light the model estimated, per photo (/correct, /analyze).",
            buckets=CCT_BUCKETS,
            registry=self.registry,
        )
        self.dead_zone = Counter(
            "wbvae_dead_zone_decisions",
            "Photos by the dead zone's decision: inside (white near neutral, correction mostly left out), outside, "
            "off (the model has no dead zone).",
            ["decision"],
            registry=self.registry,
        )
        self.adaptation = Counter(
            "wbvae_adaptation_choices",
            "Photos by the adaptation asked for (/correct, /analyze): full or natural (the light's mood kept).",
            ["adaptation"],
            registry=self.registry,
        )
        self.in_flight = Gauge("wbvae_corrections_in_flight", "Corrections being processed.", registry=self.registry)
        self.oldest_running = Gauge(
            "wbvae_correction_oldest_running_seconds",
            "How long the longest-running correction has held its slot (0: none running).",
            registry=self.registry,
        )
        self.body_bytes_in_flight = Gauge(
            "wbvae_body_bytes_in_flight",
            "Bytes counted against WBVAE_MAX_BODY_BYTES_IN_FLIGHT: request bodies' bytes received, until their answer.",
            registry=self.registry,
        )
        self.unsent_answer_bytes = Gauge(
            "wbvae_unsent_answer_bytes",
            "Bytes of answers the clients have not read yet, held by the server (WBVAE_MAX_UNSENT_ANSWER_BYTES).",
            registry=self.registry,
        )
        self.queued = Gauge("wbvae_corrections_queued", "Corrections waiting for a slot.", registry=self.registry)
        self.rejected = Counter(
            "wbvae_rejected_requests",
            "Corrections refused or dropped: queue full (503), timeout (504), GPU out of memory (503), "
            "client disconnected before the answer (client_gone), body budget (503), unsent answers over their budget "
            "(503), temporary storage full (503).",
            ["reason"],
            registry=self.registry,
        )
        self.connections_cut = Counter(
            "wbvae_connections_cut",
            "Connections or requests cut by the HTTP server's own limits (app/server/protocol.py), by reason: "
            "head too large or too many headers (431), head or body too slow (408), malformed (400), "
            "silent connections, and the connection cap.",
            ["reason"],
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "wbvae_model_ready", "1 once the model is loaded and warmed up.", registry=self.registry
        )
        self.model_info = Info("wbvae_model", "Served checkpoint and device.", registry=self.registry)
        for stage in STAGES:  # export every series from the start
            self.stage_duration.labels(stage)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for decision in DEAD_ZONE_DECISIONS:
            self.dead_zone.labels(decision)
        for adaptation in ADAPTATIONS:
            self.adaptation.labels(adaptation)

    def record(self, stages: dict[str, float], megapixels: float, inference_seconds: float) -> None:
        """One correction's stage times (seconds), input size and model-plus-mapping time."""
        for stage, seconds in stages.items():
            self.stage_duration.labels(stage).observe(seconds)
        self.input_megapixels.observe(megapixels)
        self.inference_duration.observe(inference_seconds)

    def record_estimate(self, cct: float | None, dead_zone_decision: str, adaptation: str = "full") -> None:
        """What the model saw in one photo: its light's CCT (None: not a light colour) and the dead zone's call; and
        the adaptation asked for."""
        self.adaptation.labels(adaptation).inc()
        if cct is not None:
            self.illuminant_cct.observe(cct)
        self.dead_zone.labels(dead_zone_decision).inc()

    def watch_gpu_memory(self, device) -> None:
        """Export CUDA memory allocated and reserved by this process on ``device``."""
        import torch

        gauge = Gauge("wbvae_gpu_memory_bytes", "CUDA memory of this process.", ["kind"], registry=self.registry)
        gauge.labels("allocated").set_function(lambda: torch.cuda.memory_allocated(device))
        gauge.labels("reserved").set_function(lambda: torch.cuda.memory_reserved(device))
