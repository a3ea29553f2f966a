"""All configuration in one place, read from NNSERVE_* environment variables.

Every limit is a setting with a default that works on a laptop, so operators can tighten or widen
them without a code change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.config.traffic import parse_shadow, parse_traffic

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus-client's multiprocess mode keeps the workers' metrics; set by the console script
for NNSERVE_WORKERS > 1, read by prometheus-client when a worker first imports it."""


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _read_keys(path: Path, variable: str) -> list[str]:
    """The keys in a key file: one per line or comma-separated. A file that cannot be read, or
    holds no key, stops the start: a secret mounted at the wrong path must not leave the
    endpoints it was meant to close open."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not a text file"
        raise ValueError(f"{variable}: cannot read {path}: {reason}") from None
    keys = [key.strip() for line in text.splitlines() for key in line.split(",") if key.strip()]
    if not keys:
        raise ValueError(f"{variable}: {path} holds no key")
    return keys


class Settings(BaseSettings):
    # Errors name the setting, never its value: the values include the API keys.
    model_config = SettingsConfigDict(
        env_prefix="NNSERVE_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, description="uvicorn worker processes")
    models_dir: Path = Path("models")

    intra_op_threads: int = Field(1, ge=0, description="onnxruntime threads per session; 0 = all")
    inference_threads: int = Field(1, ge=1, description="threads running sessions off the event loop")
    batching: bool = Field(True, description="stack requests that arrive together into one call")
    max_body_bytes: int = Field(1 << 20, ge=1024)
    body_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="a request's body must have arrived this long after its head; past it: 408. "
        "A stalled upload holds its part of the byte budget no longer",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="a request's head (request line and headers) must have arrived this long after its "
        "first byte, or after the connection opened; past it the connection is closed (408 if a head "
        "had begun). A client that sends nothing or trickles its headers holds a connection no longer",
    )
    max_email_chars: int = Field(100_000, ge=1)
    max_image_bytes: int = Field(512 << 10, ge=1)
    max_image_side: int = Field(
        1024, ge=28, description="pixels along either side of one image: a digit is read at 20x20 px"
    )
    max_request_pixels: int = Field(
        4 << 20, ge=784, description="pixels of all images of one request: bounds its decoding CPU"
    )
    decode_threads: int = Field(
        2, ge=1, description="images decoded at once, over all requests: bounds decoding memory"
    )
    max_batch_size: int = Field(256, ge=1)
    spam_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="overrides every spam version's threshold, for every kind of text; unset: the "
        "card's for the text's kind (an email with headers, or a bare text), else its one, else 0.5",
    )
    explain_max_words: int = Field(
        128,
        ge=1,
        description="/explain/spam: known words examined, one network row each; more "
        "than about 128 rows of 10,000 words outgrow the CPU cache and cost several times more",
    )

    max_in_flight: int = Field(
        512, ge=1, description="prediction requests served at once; past it: 503 + Retry-After"
    )
    max_queued_rows: int = Field(
        512, ge=1, description="rows waiting per model version; past it: 503 + Retry-After"
    )
    max_bytes_in_flight: int = Field(
        16 << 20, ge=1024, description="request bodies held at once; past it: 503 + Retry-After"
    )
    retry_after_seconds: int = Field(1, ge=0)
    inference_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="a request's deadline, and the most X-Request-Timeout can ask for; "
        "past it: 504, queued work dropped",
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="on SIGTERM, time until exit, the drain included"
    )
    drain_seconds: float = Field(
        5.0, ge=0, description="on SIGTERM, time /ready answers 503 while requests are still accepted"
    )
    # Explanations apart (issue 25): their own executor and queue, so they cannot starve predictions
    explain_threads: int = Field(
        1, ge=1, description="threads running explanation rows, apart from predictions"
    )
    explain_max_queued_rows: int = Field(
        512, ge=1, description="explanation rows waiting per model version; past it: 503 + Retry-After"
    )
    explain_nice: int = Field(
        19,
        ge=0,
        le=19,
        description="the explanation threads' niceness (Linux): when the cores are busy, predictions "
        "get them first; 0: explanations compete as equals",
    )

    inline_model_us: float = Field(
        50.0,
        ge=0,
        description="a model whose batch-1 call takes less than this at warm-up runs on "
        "the event loop: the hop to a thread and back costs more than such a call; 0: never",
    )
    # No hop where it does not pay (issue 25): bench's digit runs, loop against thread
    inline_when_idle_model_us: float = Field(
        1000.0,
        ge=0,
        description="a slower model whose batch-1 call takes less than this runs on the event loop "
        "when a request finds it idle (sparse traffic), else on the inference thread; 0: never",
    )

    # The Open Inference Protocol over gRPC (service/grpc/), served beside the REST app.
    grpc_port: int = Field(
        8081, ge=0, le=65535, description="port of the gRPC inference service, on NNSERVE_HOST; 0 = off"
    )
    # What a hostile gRPC client can hold (issue 30): grpc.aio shows no partial message, so their
    # memory is bounded by how many calls may be receiving one, times NNSERVE_MAX_BODY_BYTES.
    grpc_max_receiving_calls: int = Field(
        64,
        ge=1,
        description="gRPC inference calls whose request message is still arriving, over all "
        "connections, and as many other calls (probes, metadata); past it: UNAVAILABLE "
        "(overloaded). Partial messages take at most twice this x NNSERVE_MAX_BODY_BYTES",
    )
    grpc_max_streams: int = Field(
        100,
        ge=1,
        description="gRPC calls open at once on one connection (HTTP/2 MAX_CONCURRENT_STREAMS); "
        "a client queues the others",
    )
    grpc_window_bytes: int = Field(
        64 << 10,
        ge=1024,
        description="bytes a client may send on a gRPC call before the server reads them (HTTP/2 "
        "flow-control window, not grown by bandwidth probing): what an unread call holds",
    )
    grpc_idle_seconds: float = Field(
        300.0, gt=0, description="a gRPC connection without a call for this long is closed"
    )
    grpc_connection_age_seconds: float = Field(
        3600.0,
        gt=0,
        description="a gRPC connection is closed after this long (its calls get "
        "NNSERVE_INFERENCE_TIMEOUT_SECONDS to finish), so clients reconnect and spread",
    )

    # Drop-in models and readiness (issue 26)
    max_model_bytes: int = Field(
        512 << 20, ge=1, description="a model.onnx larger than this is not loaded (reported by /ready)"
    )
    max_warm_up_bytes: int = Field(
        64 << 20,
        ge=1024,
        description="bytes a model's declared inputs and fixed outputs take for the warm-up's one "
        "row; a model over it is not ready (checked before anything is allocated)",
    )
    max_output_bytes: int = Field(
        16 << 20,
        ge=1024,
        description="bytes of the outputs one request gets from a model; past it: 422 "
        "output_too_large (a drop-in whose output size its input sets)",
    )
    strict_readiness: bool = Field(
        True,
        description="/ready is 200 only when every version found loaded; false: when at least one "
        "did (Triton's --strict-readiness=false), the others still reported",
    )

    # Canary and shadow (issue 26; service/models/traffic.py, service/models/shadow.py)
    traffic: str = Field(
        "", description="canary weights per model: 'spam=2:90,3:10;digit=1:50,2:50' (percentages)"
    )
    shadow: str = Field("", description="a shadow version per model: 'spam:3,digit:2'")
    shadow_queue_bytes: int = Field(
        16 << 20,
        ge=1024,
        description="requests waiting for their shadow comparison, in bytes (their tensors, outputs "
        "and bodies); past it, comparisons are dropped and counted",
    )
    shadow_log_per_minute: int = Field(
        0, ge=0, description="inputs on which a shadow disagrees, logged per minute; 0: none"
    )

    api_keys: Annotated[list[str], NoDecode] = Field(
        [],
        # NNSERVE_API_KEY, the name before keys were a list, still works.
        validation_alias=AliasChoices("NNSERVE_API_KEYS", "NNSERVE_API_KEY"),
        description="comma-separated API keys; empty = prediction endpoints are open",
    )
    admin_keys: Annotated[list[str], NoDecode] = Field(
        [], description="comma-separated keys for load, unload and the repository index; empty = refused"
    )
    cors_origins: Annotated[list[str], NoDecode] = []
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"

    @field_validator("cors_origins", "api_keys", "admin_keys", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("traffic")
    @classmethod
    def _traffic_syntax(cls, value: str) -> str:
        parse_traffic(value)  # the versions are checked against the repository once it is loaded
        return value

    @field_validator("shadow")
    @classmethod
    def _shadow_syntax(cls, value: str) -> str:
        parse_shadow(value)
        return value

    @model_validator(mode="after")
    def _drain_within_grace(self) -> Self:
        if self.drain_seconds > self.shutdown_grace_seconds:
            raise ValueError("NNSERVE_DRAIN_SECONDS must not exceed NNSERVE_SHUTDOWN_GRACE_SECONDS")
        return self

    # Keys from files (issue 23): Docker Swarm secrets and Kubernetes Secrets are mounted as
    # files, which keeps the keys out of the environment that `docker inspect` and /proc show.
    api_keys_file: Path | None = Field(
        None, description="a file of prediction keys (one a line, or commas), added to NNSERVE_API_KEYS"
    )
    admin_keys_file: Path | None = Field(
        None, description="a file of admin keys (one a line, or commas), added to NNSERVE_ADMIN_KEYS"
    )

    @field_validator("api_keys_file", "admin_keys_file")
    @classmethod
    def _key_file_readable(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        """Checked here, field by field, so an error shows the path and never the keys of the
        other settings (a model validator's error prints every input)."""
        if path is not None:
            _read_keys(path, f"NNSERVE_{str(info.field_name).upper()}")
        return path

    @model_validator(mode="after")
    def _add_file_keys(self) -> Self:
        if self.api_keys_file:
            self.api_keys = [*self.api_keys, *_read_keys(self.api_keys_file, "NNSERVE_API_KEYS_FILE")]
        if self.admin_keys_file:
            self.admin_keys = [*self.admin_keys, *_read_keys(self.admin_keys_file, "NNSERVE_ADMIN_KEYS_FILE")]
        return self
