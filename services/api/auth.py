"""API keys and scopes: who may call what.

Keys arrive as ``Authorization: Bearer <key>``. The service keeps only SHA-256 digests in memory
and compares them in constant time. Configuration (one of):

- ``API_KEYS``: a JSON object mapping a key (or ``sha256:<hex>`` of it) to a list of scopes, or to
  ``{"name": ..., "scopes": [...]}``;
- ``API_KEYS_FILE``: a file holding such an object (store digests there, not keys).

``python -m services.api.auth new --scopes results:write,status:read --name epic`` prints a new key
and its digest. Every route but /healthz, /readyz, the API reference (/docs, /openapi.yaml), the
dashboard's page and files (/dashboard: it holds no data) and /fhir/metadata needs a key: 401 without a
valid one, 403 when the key lacks the route's scope.
Unmapped routes are refused (deny by default).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, g, request

from services.api.errors import Problem

SCOPES = ("results:write", "status:read", "cohorts:write", "ops:read")
# The probes, the API reference (/docs, its assets and /openapi.yaml), the dashboard's page and files (no
# data: it calls the keyed API from the browser) and the FHIR CapabilityStatement,
# which FHIR servers publish so that clients can discover them
# (http://hl7.org/fhir/R4/http.html#capabilities): none holds patient data.
PUBLIC = frozenset(
    {
        "health.healthz", "health.readyz", "docs.docs_page", "docs.docs_asset", "docs.openapi_yaml",
        "fhir.metadata", "static", "dashboard.page", "dashboard.asset",
    }
)  # fmt: skip

# Endpoint -> scopes any of which grants access. One table, so the policy reads in one place.
REQUIRED: dict[str, frozenset[str]] = {
    "results.post_results": frozenset({"results:write"}),
    "hl7v2.post_hl7v2": frozenset({"results:write"}),
    "patients.put_patient": frozenset({"results:write"}),
    "patients.post_events": frozenset({"results:write"}),
    "patients.get_status": frozenset({"status:read"}),
    "patients.list_patients": frozenset({"status:read"}),
    "patients.get_results": frozenset({"status:read"}),
    # The integration that posted a result follows its task; readers may too.
    "tasks.get_task": frozenset({"results:write", "status:read"}),
    "cohorts.put_cohort": frozenset({"cohorts:write"}),
    "cohorts.list_cohorts": frozenset({"status:read"}),
    "cohorts.get_statistics": frozenset({"status:read"}),
    "cohorts.get_curve": frozenset({"status:read"}),
    "cohorts.compare": frozenset({"status:read"}),
    # The IS% and milestone bounds the dashboard draws: no patient data, but the API's, so keyed.
    "reference.response_levels": frozenset({"status:read"}),
    "ops.queues": frozenset({"ops:read"}),
    "ops.audit": frozenset({"ops:read"}),
    "ops.dead_letters": frozenset({"ops:read"}),
    "ops.retry_dead_letter": frozenset({"ops:read"}),
    "ops.metrics": frozenset({"ops:read"}),
    # FHIR R4 (services/api/fhir.py): the same scopes as the JSON routes.
    "fhir.create": frozenset({"results:write"}),
    "fhir.conditional_update": frozenset({"results:write"}),
    "fhir.update": frozenset({"results:write"}),
    "fhir.bundle": frozenset({"results:write"}),
    "fhir.search": frozenset({"status:read"}),
    "fhir.read": frozenset({"status:read"}),
}


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    digest: bytes
    scopes: frozenset[str]


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _parse_entry(secret: str, value: object) -> ApiKey:
    if isinstance(value, dict):
        name, scopes = value.get("name"), value.get("scopes", [])
    else:
        name, scopes = None, value
    if not isinstance(scopes, list) or not set(scopes) <= set(SCOPES):
        raise ValueError(f"API key scopes must be a list drawn from {', '.join(SCOPES)}")
    if secret.startswith("sha256:"):
        d = bytes.fromhex(secret.removeprefix("sha256:"))
        if len(d) != 32:
            raise ValueError("a sha256: key digest must be 64 hex digits")
    else:
        d = digest(secret)
    return ApiKey(name or f"key-{d.hex()[:8]}", d, frozenset(scopes))


def load_keys(api_keys: str | None, api_keys_file: str | None) -> list[ApiKey]:
    entries: dict = {}
    if api_keys_file:
        entries |= json.loads(Path(api_keys_file).read_text())
    if api_keys:
        entries |= json.loads(api_keys)
    keys = [_parse_entry(secret, value) for secret, value in entries.items()]
    names = [k.key_id for k in keys]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        # The name is the caller in the audit trail and its rate budget: two keys must not share one.
        raise ValueError(f"API key names must be unique; used more than once: {', '.join(twice)}")
    return keys


def authenticate(keys: list[ApiKey], header: str | None) -> ApiKey | None:
    """The key a Bearer header carries, compared against every digest in constant time."""
    scheme, _, credentials = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():  # schemes are case-insensitive (RFC 9110)
        return None
    presented = digest(credentials.strip())
    found = None
    for key in keys:
        if hmac.compare_digest(presented, key.digest):
            found = key
    return found


def init_auth(app: Flask, keys: list[ApiKey]) -> None:
    @app.before_request
    def _authorize() -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        endpoint = req.endpoint
        if endpoint is None or endpoint in PUBLIC:
            return  # unknown URL (404 follows) or a public probe
        key = authenticate(keys, req.headers.get("Authorization"))
        if key is None:
            raise Problem(
                401, "unauthorized", "Unauthorized", "Send a valid API key as 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": 'Bearer realm="cml"'},
            )  # fmt: skip
        g.api_key = key
        needed = REQUIRED.get(endpoint)
        if not needed or not (needed & key.scopes):
            wanted = " or ".join(sorted(needed or {"(none: route not mapped)"}))
            raise Problem(
                403, "forbidden", "Forbidden", f"This key lacks the scope this route needs: {wanted}."
            )


def caller() -> str:
    """The calling key's id (never the key), for the audit trail and rate limits."""
    key = g.get("api_key")
    return key.key_id if key else "anonymous"


def _new(args: argparse.Namespace) -> None:
    scopes = [s for s in args.scopes.split(",") if s]
    if not set(scopes) <= set(SCOPES):
        sys.exit(f"scopes must be drawn from {', '.join(SCOPES)}")
    key = secrets.token_urlsafe(32)
    entry = {f"sha256:{digest(key).hex()}": {"name": args.name, "scopes": scopes} if args.name else scopes}
    print(f"key:    {key}")
    print(f"digest: sha256:{digest(key).hex()}")
    print(f"API_KEYS_FILE entry: {json.dumps(entry)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.api.auth")
    sub = parser.add_subparsers(required=True)
    new = sub.add_parser("new", help="print a new API key and its digest")
    new.add_argument("--scopes", default=",".join(SCOPES), help="comma-separated scopes")
    new.add_argument("--name", default=None, help="a name for the audit trail")
    new.set_defaults(func=_new)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
