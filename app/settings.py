"""The service's one settings class (environment variables prefixed ``WBVAE_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.corrector import DEFAULT_CHECKPOINT


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
    api_keys: str = Field("", description="Comma-separated API keys; when set, /correct needs a Bearer key.")
    strip_gps: bool = Field(True, description="Remove GPS tags from the EXIF returned with the photo.")
    png_compress_level: int = Field(1, ge=0, le=9, description="zlib level of PNG output (1: fast, 9: small).")
    encode_threads: int = Field(0, ge=0, description="Threads that map and PNG-encode one photo (0: one per core).")
    retain_freed_memory: bool = Field(
        True,
        description="glibc: keep freed memory for the next photo (one arena, "
        "no trimming): fewer page faults; RSS stays at its peak.",
    )
    default_quality: int = Field(90, ge=1, le=100, description="JPEG/WebP quality unless the request sets one.")
    log_level: str = Field("info", description="Log level of the service and uvicorn.")
    log_json: bool = Field(True, description="One JSON object per log line (False: plain text).")

    @property
    def api_key_list(self) -> list[str]:
        """The configured API keys (empty: no auth)."""
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]
