"""The HTTP side of the import: one request, retried when the service says "later" or the network fails.

429 and 502/503/504 are retried honouring Retry-After (capped), as is a 409 telling that the same
Idempotency-Key is still being handled; connection errors and timeouts are retried with exponential
backoff. Both are bounded (``retries``): then ``Unreachable`` stops the import, its checkpoint saved.
401/403 stop it at once (``Refused``): no row of the file can get through with that key.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_WAIT_S = 30.0
USER_AGENT = "cml-import/0.1"


class Unreachable(Exception):
    """The API did not answer (or kept answering "later") after the bounded retries."""


class Refused(Exception):
    """The API refused the key (401/403): nothing can be imported with it."""


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        import json

        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Api:
    """A client of the service's HTTP API, one keep-alive session per thread."""

    def __init__(
        self, base_url: str, key: str, retries: int = 6, timeout: float = 120.0, backoff: float = 0.5
    ):
        self.base = base_url.rstrip("/")
        self.key, self.retries, self.timeout, self.backoff = key, retries, timeout, backoff
        self._local = threading.local()
        self.retried = 0  # requests re-sent (for the report)

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers.update({"Authorization": f"Bearer {self.key}", "User-Agent": USER_AGENT})
        return s

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(MAX_WAIT_S, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return min(MAX_WAIT_S, self.backoff * 2**attempt) * (0.75 + random.random() / 2)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        """Send; retry what is worth retrying; return any other answer (2xx or a refusal to read)."""
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            try:
                resp = self._session().request(
                    method, self.base + path, data=body, headers=headers, timeout=(10, self.timeout)
                )
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
                if attempt < self.retries:
                    time.sleep(self._wait(attempt, None))
                continue
            answer = Answer(resp.status_code, resp.headers, resp.content)
            if resp.status_code in (401, 403):
                doc = answer.json() or {}
                raise Refused(f"{resp.status_code} {doc.get('detail') or doc.get('title') or resp.reason}")
            in_use = resp.status_code == 409 and b"idempotency-key-in-use" in resp.content
            if resp.status_code not in RETRY_STATUSES and not in_use:
                return answer
            last = f"HTTP {resp.status_code}"
            if attempt < self.retries:
                time.sleep(self._wait(attempt, resp.headers.get("Retry-After")))
        raise Unreachable(f"{method} {path}: {last} (after {self.retries} retries)")

    def check(self) -> None:
        """GET /healthz (no key needed): is anything answering there?"""
        answer = self.request("GET", "/healthz")
        if answer.status != 200:
            raise Unreachable(f"GET /healthz answered {answer.status}: is {self.base} the CML API?")
