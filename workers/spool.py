"""The result spool: a finished trial's report lives on disk until the server acknowledges it.

The worker writes the complete body here (atomically: temporary file, fsync, rename) *before*
sending it, deletes it once the server answers 2xx, and otherwise keeps it: the same worker
retries before every lease, and the next worker started with the same spool directory
re-sends it at start-up. A network blip or a server restart therefore never loses a trained
result. A report the server refuses for good (409: the lease was lost meanwhile; other 4xx)
is moved to `rejected/` beside the spool, for a person to look at, and not re-sent; the
exception is a trial the server itself told to stop: its 409 is the answer (the server already
holds the curve from the heartbeats), and the entry is simply dropped.

Location: `--spool-dir`, else `$VITCUBE_SPOOL_DIR`, else `$XDG_STATE_HOME/vitcube/spool`
(`~/.local/state/vitcube/spool`). One JSON file per result:
`{"server": URL, "trial_id": N, "body": {...}, "spooled_at": ISO time, "weights": NAME}`.

An entry may carry the trial's final weights (`weights`: a file beside the JSON, moved in
before the JSON is written, so an entry never names a file that is not there). `deliver()`
uploads them (PUT /api/trials/{id}/weights) before the complete: an unreachable server keeps
both for later; a permanent 4xx drops the weights (logged) and still completes; a 409 is
treated as complete's 409 would be (a stopped trial's weights are dropped and the complete is
still sent, it decides).

Imports workers.client only; never torch (an import contract checks).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vitcube.workers.client import (
    AuthError,
    LeaseLost,
    RequestRejected,
    ServerUnavailable,
    VitcubeClient,
)


def default_spool_dir() -> Path:
    env = os.environ.get("VITCUBE_SPOOL_DIR")
    if env:
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "vitcube" / "spool"


@dataclass(frozen=True)
class SpoolEntry:
    path: Path
    server: str
    trial_id: int
    body: dict[str, Any]
    stopped: bool = False  # the server had told the trial to stop: a 409 is an answer, not a loss
    weights: Path | None = None  # the trial's weights file, to upload before the complete


class Spool:
    """A directory of undelivered results (safe for several workers sharing it)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.rejected_dir = self.directory / "rejected"

    def put(
        self,
        server: str,
        trial_id: int,
        body: dict[str, Any],
        *,
        stopped: bool = False,
        weights: Path | None = None,
    ) -> SpoolEntry:
        """Write one result durably; returns its entry. `weights`: a file (on the spool's
        filesystem, e.g. from `staging_path`) moved into the spool with the result."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lease = "".join(ch for ch in str(body.get("lease_id", "")) if ch.isalnum())[:40]
        # One file per (server, trial, lease): a newer report for the same lease replaces it.
        origin = hashlib.sha256(server.rstrip("/").encode()).hexdigest()[:8]
        path = self.directory / f"trial-{trial_id}-{lease or 'nolease'}-{origin}.json"
        weights_path: Path | None = None
        if weights is not None:
            weights_path = path.with_name(path.stem + ".weights.pt")
            os.replace(weights, weights_path)
        record = {
            "server": server.rstrip("/"),
            "trial_id": trial_id,
            "body": body,
            "stopped": stopped,
            "spooled_at": datetime.now(UTC).isoformat(),
            "weights": weights_path.name if weights_path is not None else None,
        }
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(record, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_dir(self.directory)
        return SpoolEntry(path, server.rstrip("/"), trial_id, body, stopped, weights_path)

    def staging_path(self, trial_id: int) -> Path:
        """Where to write a weights file before `put` moves it in (same filesystem)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / f".weights-{trial_id}-{os.getpid()}.tmp"

    def pending(self, server: str | None = None) -> list[SpoolEntry]:
        """Undelivered results, oldest first; only those for `server` when given."""
        if not self.directory.is_dir():
            return []
        entries: list[SpoolEntry] = []
        files = sorted(self.directory.glob("trial-*.json"), key=lambda p: p.stat().st_mtime)
        for path in files:
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                weights = record.get("weights")
                entry = SpoolEntry(
                    path,
                    str(record["server"]),
                    int(record["trial_id"]),
                    dict(record["body"]),
                    bool(record.get("stopped", False)),
                    self.directory / str(weights) if weights else None,
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue  # half-written by a crashed writer cannot happen (rename); skip junk
            if server is None or entry.server == server.rstrip("/"):
                entries.append(entry)
        return entries

    def remove(self, entry: SpoolEntry) -> None:
        entry.path.unlink(missing_ok=True)
        self.drop_weights(entry)

    def drop_weights(self, entry: SpoolEntry) -> None:
        if entry.weights is not None:
            entry.weights.unlink(missing_ok=True)

    def reject(self, entry: SpoolEntry, reason: str) -> Path:
        """Move an entry the server refused for good to rejected/, with the reason beside it."""
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        target = self.rejected_dir / entry.path.name
        if entry.path.exists():
            os.replace(entry.path, target)
        if entry.weights is not None and entry.weights.exists():
            os.replace(entry.weights, self.rejected_dir / entry.weights.name)
        target.with_suffix(".reason.txt").write_text(reason + "\n", encoding="utf-8")
        return target


def deliver(
    spool: Spool,
    client: VitcubeClient,
    *,
    deadline_s: float | None = 30.0,
    abort: threading.Event | None = None,
    log: Any = None,
    only: SpoolEntry | None = None,
) -> tuple[int, int]:
    """Send pending results for the client's server; returns (delivered, still pending).

    Stops at the first entry the server cannot be reached for (the rest would fail the same way).
    AuthError propagates: a worker whose token is refused must stop, not spin.
    """
    say = log or (lambda message: None)
    entries = [only] if only is not None else spool.pending(client.server)
    delivered = 0
    for index, entry in enumerate(entries):
        try:
            if entry.weights is not None and entry.weights.exists():
                _deliver_weights(spool, client, entry, deadline_s=deadline_s, abort=abort, say=say)
            client.complete(entry.trial_id, entry.body, deadline_s=deadline_s, abort=abort)
        except ServerUnavailable as error:
            say(f"result of trial {entry.trial_id} kept in {entry.path} ({error})")
            return delivered, len(entries) - index
        except LeaseLost as error:
            if entry.stopped:
                # The server stopped this trial itself and kept its curve from the heartbeats.
                spool.remove(entry)
                say(f"trial {entry.trial_id} was stopped by the server ({error})")
                continue
            where = spool.reject(entry, f"409 from the server: {error}")
            say(
                f"server refused the result of trial {entry.trial_id} (409: {error}); "
                f"kept in {where}"
            )
            continue
        except RequestRejected as error:
            where = spool.reject(entry, str(error))
            say(f"server rejected the result of trial {entry.trial_id} ({error}); kept in {where}")
            continue
        except AuthError:
            raise
        spool.remove(entry)
        delivered += 1
        say(f"delivered the result of trial {entry.trial_id}")
    return delivered, 0


def _deliver_weights(
    spool: Spool,
    client: VitcubeClient,
    entry: SpoolEntry,
    *,
    deadline_s: float | None,
    abort: threading.Event | None,
    say: Any,
) -> None:
    """PUT an entry's weights; ServerUnavailable, AuthError and (unless stopped) LeaseLost
    propagate to `deliver`, which treats them as complete's; other refusals drop the file."""
    assert entry.weights is not None
    try:
        client.put_weights(
            entry.trial_id,
            str(entry.body.get("lease_id", "")),
            entry.weights,
            deadline_s=deadline_s,
            abort=abort,
        )
    except LeaseLost as error:
        if not entry.stopped:
            raise
        spool.drop_weights(entry)
        say(f"weights of the stopped trial {entry.trial_id} not stored ({error})")
        return
    except RequestRejected as error:
        spool.drop_weights(entry)
        say(f"server refused the weights of trial {entry.trial_id} ({error}); completing without")
        return
    spool.drop_weights(entry)
    say(f"stored the weights of trial {entry.trial_id}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
