"""Configuration from the environment, in one place for the API and the worker.

Every setting has a default that runs on a developer machine; deployments override them
with environment variables (see README.md, "Configuration").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _retention_days(text: str) -> float:
    days = float(text)
    if not (math.isfinite(days) and 0 <= days <= 36_500):
        raise ValueError(f"AUDIT_RETENTION_DAYS must be 0 (keep all) to 36500 days, got {text!r}")
    return days


@dataclass(frozen=True)
class Settings:
    redis_url: str
    broker_url: str
    result_backend: str
    # Most items one POST /v1/assay-results may carry; larger batches are split by the sender.
    max_batch: int
    # Largest request body accepted (413 above it): a full batch of results fits well within it.
    max_body_bytes: int
    # The sweeper re-enqueues a dirty patient whose last enqueue is older than this, so a task lost
    # with a killed worker is redone in seconds, not after the broker's one-hour visibility timeout.
    sweep_interval_s: float
    requeue_after_s: float
    # A cohort refresh waits this long after the first change, so a burst of results coalesces
    # into a handful of refreshes; the lock TTL bounds a refresh that died holding it.
    cohort_debounce_s: float
    cohort_lock_ttl_s: float
    # API keys (services/api/auth.py): a JSON object, or a file of one holding sha256 digests.
    api_keys: str | None
    api_keys_file: str | None
    # Per-key request budget (the limits library's notation), kept in Redis so all API processes share it.
    rate_limit: str
    # The hot reads (status, timeline) are limited per key within each API process instead: a Redis
    # round trip for the count would cost them more than the read itself (bench/README.md).
    hot_read_rate_limit: str
    # How long a task tracking document (GET /v1/tasks/{id}) is kept.
    task_ttl_s: int
    # How long the answer to an Idempotency-Key is kept for its retries (deflated: a few KB for a
    # small batch, about 45 KB for 1,000 results each touching another patient).
    idempotency_ttl_s: int
    # Broker visibility timeout: unacked messages of a dead worker come back after this.
    visibility_timeout_s: int
    # Audit entries older than this many days are trimmed by the sweeper; 0 keeps every entry (the
    # default: an audit trail that trims itself by count would drop writes without anyone deciding).
    audit_retention_days: float
    # Interoperability (shared/interop): a JSON file mapping laboratories' local result codes to the
    # service's codes (added to the defaults); which PID-3 assigning authority names the patient id
    # (empty: the first identifier); the MLLP listener's address and the API key name it audits as.
    lab_codes_file: str | None = None
    patient_id_authority: str = ""
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575
    mllp_caller: str = "mllp"
    # A message must arrive whole within this many seconds of the last one (an idle or stalled connection
    # is closed: engines reconnect), so a silent peer cannot hold a connection forever.
    mllp_read_timeout_s: float = 300.0


def load_settings() -> Settings:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    return Settings(
        redis_url=redis_url,
        broker_url=os.environ.get("CELERY_BROKER_URL", redis_url),
        result_backend=os.environ.get("CELERY_RESULT_BACKEND", redis_url),
        max_batch=_int("MAX_BATCH", 1000),
        max_body_bytes=_int("MAX_BODY_BYTES", 2 * 1024 * 1024),
        sweep_interval_s=_float("SWEEP_INTERVAL_S", 2.0),
        requeue_after_s=_float("REQUEUE_AFTER_S", 10.0),
        cohort_debounce_s=_float("COHORT_DEBOUNCE_S", 1.0),
        cohort_lock_ttl_s=_float("COHORT_LOCK_TTL_S", 60.0),
        task_ttl_s=_int("TASK_TTL_S", 86400),
        idempotency_ttl_s=_int("IDEMPOTENCY_TTL_S", 86400),
        api_keys=os.environ.get("API_KEYS"),
        api_keys_file=os.environ.get("API_KEYS_FILE"),
        rate_limit=os.environ.get("RATE_LIMIT", "6000/minute"),
        hot_read_rate_limit=os.environ.get("HOT_READ_RATE_LIMIT", "60000/minute"),
        visibility_timeout_s=_int("VISIBILITY_TIMEOUT_S", 3600),
        audit_retention_days=_retention_days(os.environ.get("AUDIT_RETENTION_DAYS", "0")),
        lab_codes_file=os.environ.get("LAB_CODES_FILE") or None,
        patient_id_authority=os.environ.get("PATIENT_ID_AUTHORITY", ""),
        # Loopback by default: an MLLP port is unauthenticated, so exposing it is a deliberate choice.
        mllp_host=os.environ.get("MLLP_HOST", "127.0.0.1"),
        mllp_port=_int("MLLP_PORT", 2575),
        mllp_caller=os.environ.get("MLLP_CALLER", "mllp"),
        mllp_read_timeout_s=_float("MLLP_READ_TIMEOUT_S", 300.0),
    )
