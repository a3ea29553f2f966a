"""All configuration in one place, read from NNSERVE_* environment variables.

Every limit is a setting with a default that works on a laptop, so operators can tighten or widen
them without a code change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NNSERVE_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, description="uvicorn worker processes")
    models_dir: Path = Path("models")

    intra_op_threads: int = Field(1, ge=0, description="onnxruntime threads per session; 0 = all")
    inference_threads: int = Field(1, ge=1, description="threads running sessions off the event loop")
    batching: bool = Field(True, description="stack requests that arrive together into one call")
    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_email_chars: int = Field(100_000, ge=1)
    max_image_bytes: int = Field(512 << 10, ge=1)
    max_image_pixels: int = Field(4_000_000, ge=784)
    max_batch_size: int = Field(256, ge=1)
    spam_threshold: float = Field(0.5, ge=0.0, le=1.0)

    max_in_flight: int = Field(
        512, ge=1, description="prediction requests served at once; past it: 503 + Retry-After"
    )
    retry_after_seconds: int = Field(1, ge=0)
    inference_timeout_seconds: float = Field(
        10.0, gt=0, description="deadline for a request's inference; past it: 504, work dropped"
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="on SIGTERM, time given to requests in flight before exit"
    )
    bench_routes: bool = Field(
        False, description="bench-only: adds GET /bench/constant, the bare ceiling of this stack"
    )
    test_inference_delay_ms: float = Field(
        0.0, ge=0, description="test-only: sleep before every onnxruntime call (deadline tests)"
    )

    api_key: Annotated[list[str], NoDecode] = Field(
        [], description="comma-separated API keys; empty = prediction endpoints are open"
    )
    cors_origins: Annotated[list[str], NoDecode] = []
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"

    @field_validator("cors_origins", "api_key", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        return _split_commas(value)
