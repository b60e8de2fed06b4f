"""The service's one settings class (environment variables prefixed ``WBVAE_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.corrector import DEFAULT_CHECKPOINT

# Multipart framing (boundaries, part headers) allowed on top of the file's own bytes.
MULTIPART_SLACK_BYTES = 64 * 1024


class Settings(BaseSettings):
    """Configuration; built once and passed to ``create_app``."""

    model_config = SettingsConfigDict(env_prefix="WBVAE_", env_file=None, extra="ignore")

    checkpoint: Path = Field(DEFAULT_CHECKPOINT, description="Trained model checkpoint to serve.")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    host: str = Field("0.0.0.0", description="Interface to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1, description="Largest accepted upload (413 above).")
    max_pixels: int = Field(50_000_000, ge=1, description="Largest accepted width x height (413 above).")
    max_concurrent_corrections: int = Field(2, ge=1, description="Corrections run at once; others queue.")
    max_queued_corrections: int = Field(8, ge=0, description="Corrections waiting for a slot; 503 beyond.")
    batch: Literal["auto", "on", "off"] = Field(
        "auto", description="Micro-batch concurrent requests' model forwards: auto (on for CUDA only), on, off."
    )
    batch_max_size: int = Field(8, ge=1, description="Most photos in one batched model forward.")
    batch_max_wait_ms: float = Field(5.0, ge=0, description="Longest a forward waits for photos still decoding.")
    gpu_mapping: bool = Field(
        True,
        description="With the model on a GPU, map the pixels there too (False: on "
        "the CPU, inside the PNG writer's threads).",
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After sent with 503 (busy, GPU out of memory).")
    request_timeout_s: float = Field(60.0, gt=0, description="Queue wait plus correction time before 504.")
    shutdown_grace_s: float = Field(30.0, ge=0, description="On SIGTERM, time in-flight requests get to finish.")
    # The HTTP server's own limits (app/server/protocol.py).
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest request head (request line and headers); 431 and closed above."
    )
    max_headers: int = Field(100, ge=10, description="Most header fields in one request; 431 and closed above.")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="An idle keep-alive connection is closed after this.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="Time a connection (or a new request on it) gets to send its whole head; 408 after."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Longest silence while a request body is arriving; 408 (or closed) after."
    )
    min_body_rate_bytes_s: int = Field(
        16 * 1024,
        ge=0,
        description="Slowest request body accepted, averaged over each WBVAE_BODY_RATE_WINDOW_S; 408 and closed "
        "below (0: off). At the connection cap, the slowest body below it is closed to let a new connection in.",
    )
    body_rate_window_s: float = Field(
        10.0, gt=0, description="The window the body rate is averaged over (the first one is the grace period)."
    )
    body_deadline_s: float = Field(
        300.0, gt=0, description="Longest a request body may take in all, however steady; 408 and closed after."
    )
    max_body_bytes_in_flight: int = Field(
        512 * 1024 * 1024,
        ge=1,
        description="Bytes that request bodies in progress may hold together, in memory or temporary files, "
        "counted as they arrive (not as declared): past it, uploads still arriving slower than the one that needs "
        "room are closed with 503 and Retry-After, else that one is. At least WBVAE_MAX_UPLOAD_BYTES plus 64 KiB.",
    )
    send_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest a client may take no byte of an answer the server is holding for it; closed after, "
        "the answer dropped (nginx's send_timeout).",
    )
    max_unsent_answer_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1,
        description="Bytes of answers not yet taken by their clients that the server may hold together; past it, "
        "new uploads get 503 with Retry-After before their body is read.",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open connections; a new one beyond closes the longest-idle one, else gets 503 "
        "(health checks excepted). Lowered to fit the file-descriptor limit.",
    )
    api_keys: str = Field(
        "",
        description="Comma-separated API keys; when set, every request needs a Bearer key except GET/HEAD of "
        "the health routes, /metrics, the page and the docs.",
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated origins of browser apps allowed to call the API (CORS), e.g. "
        "https://app.example.com; empty: none; * any (refused with API keys unless allowed below).",
    )
    cors_allow_any_origin_with_api_keys: bool = Field(
        False, description="Allow WBVAE_CORS_ORIGINS=* together with API keys (any web page could use a leaked key)."
    )
    strip_gps: bool = Field(True, description="Remove GPS tags from the EXIF returned with the photo.")
    png_compress_level: int = Field(
        1,
        ge=0,
        le=9,
        description="PNG deflate level, zlib's 0-9 scale mapped onto ISA-L's: 0 stores (no compression), "
        "1-3 ISA-L level 1 (fastest), 4-6 level 2, 7-9 level 3 (on photos the three differ by 2 % in size at most).",
    )
    encode_threads: int = Field(0, ge=0, description="Threads that map and PNG-encode one photo (0: one per core).")
    retain_freed_memory: bool = Field(
        True,
        description="glibc: keep freed memory for the next photo (one arena, "
        "no trimming): fewer page faults; RSS stays at its peak.",
    )
    default_quality: int = Field(90, ge=1, le=100, description="JPEG/WebP quality unless the request sets one.")
    log_level: str = Field("info", description="Log level of the service and uvicorn.")
    log_json: bool = Field(True, description="One JSON object per log line (False: plain text).")

    @model_validator(mode="after")
    def _one_upload_fits_the_budget(self) -> Settings:
        if self.max_body_bytes_in_flight < self.max_upload_bytes + MULTIPART_SLACK_BYTES:
            raise ValueError(
                f"WBVAE_MAX_BODY_BYTES_IN_FLIGHT ({self.max_body_bytes_in_flight}) must hold one upload: "
                f"WBVAE_MAX_UPLOAD_BYTES ({self.max_upload_bytes}) + {MULTIPART_SLACK_BYTES}"
            )
        return self

    @model_validator(mode="after")
    def _no_open_cors_with_keys(self) -> Settings:
        if "*" in self.cors_origin_list and self.api_key_list and not self.cors_allow_any_origin_with_api_keys:
            raise ValueError(
                "WBVAE_CORS_ORIGINS=* with WBVAE_API_KEYS lets any web page use a key; list the origins, "
                "or set WBVAE_CORS_ALLOW_ANY_ORIGIN_WITH_API_KEYS=true"
            )
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        """The origins allowed by CORS (empty: CORS off)."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def api_key_list(self) -> list[str]:
        """The configured API keys (empty: no auth)."""
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]
