"""The checkpoint (how far the file is durably done) and the rejects file, kept consistent with each other.

After each batch the rejects it produced are written and fsynced, then the checkpoint is replaced
atomically (write, fsync, rename, fsync of the directory) with the offset after the batch, the rows and
counts so far and the size of the rejects file. A crash between the two leaves rejects the checkpoint does
not count: the next run truncates the rejects file to the size the checkpoint names, and re-sends the batch
(harmless: results are idempotent, and JSON batches carry an Idempotency-Key).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

VERSION = "cml-import-checkpoint/1"


def fingerprint(path: str) -> str:
    """What identifies the file: the digest of its first 64 KiB (a header, the first rows)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(65536)).hexdigest()


@dataclass
class State:
    file: str
    fingerprint: str
    kind: str
    format: str
    offset: int = 0
    rows: int = 0
    lines: int = 0
    rejects_bytes: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    complete: bool = False
    # Random per import (a fresh start or --restart), kept across resumptions: the Idempotency-Keys of its
    # batches derive from it, so a batch re-sent after a crash is replayed, and a new import is answered anew.
    import_id: str = field(default_factory=lambda: secrets.token_hex(8))
    version: str = VERSION
    updated_at: str = ""


class CheckpointMismatch(Exception):
    pass


def load(path: str, file: str, kind: str, fmt: str) -> State | None:
    """The saved state for this file, or None; CheckpointMismatch if it is another file's or import's."""
    try:
        with open(path, encoding="utf-8") as f:
            doc: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise CheckpointMismatch(f"{path} is not a checkpoint ({exc})") from None
    if doc.get("version") != VERSION:
        raise CheckpointMismatch(f"{path} is not a cml-import checkpoint")
    state = State(**{k: v for k, v in doc.items() if k in State.__dataclass_fields__})
    if state.fingerprint != fingerprint(file) or os.path.getsize(file) < state.offset:
        raise CheckpointMismatch(f"{path} was written for another content of {file}")
    if (state.kind, state.format) != (kind, fmt):
        raise CheckpointMismatch(
            f"{path} is of an import of {state.kind} ({state.format}), not {kind} ({fmt})"
        )
    return state


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save(path: str, state: State) -> None:
    state.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(state), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path)


class Rejects:
    """One JSON line per rejected row: its number, line, the row, the HTTP status and the reasons."""

    def __init__(self, path: str, keep_bytes: int | None):
        self.path = path
        mode = "r+b" if keep_bytes is not None and os.path.exists(path) else "wb"
        self.f: IO[bytes] = open(path, mode)  # noqa: SIM115 - held for the whole import
        if mode == "r+b":
            self.f.truncate(keep_bytes)
            self.f.seek(0, os.SEEK_END)

    def write(self, entry: dict) -> None:
        self.f.write(json.dumps(entry, ensure_ascii=False).encode() + b"\n")

    def sync(self) -> int:
        self.f.flush()
        os.fsync(self.f.fileno())
        return self.f.tell()

    def close(self) -> None:
        self.f.close()
