"""Artifacts: the store of checkpoints and final weights, and what the server records of them.

`ArtifactStore` keeps objects under one fsspec URL (`VITCUBE_ARTIFACT_URL`: a local directory
by default, `s3://bucket/prefix` through s3fs, …) with the keys the server makes; clients never
name a path. Uploads are streamed through in blocks of about 1 MiB (each blocking write in a
worker thread, hashed as it goes), size-limited, and atomic: on a local filesystem the object
is written as `<key>.partial` and renamed; on an object store a multipart upload appears only
when the file is closed, and is aborted on error. A half-written object is never visible.

The domain functions below take an open Session and never commit (service.store's style):
`record` re-checks the lease (the trial's row locked on PostgreSQL) and swaps the trial's row
of that kind in the caller's one transaction; the keys they return are objects to delete only
*after* that transaction commits, with `ArtifactStore.delete` (best effort: a leftover object
costs space, a deleted live one would lose work). Imports service.errors, service.metric,
service.settings, service.tables and vitcube.contract; never fastapi, never torch.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import fsspec
from sqlalchemy import delete, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from vitcube.contract import ArtifactKind, ArtifactPublic, CheckpointRef
from vitcube.service.errors import Conflict, NotFound, ServiceError
from vitcube.service.metric import metric_of, score_of
from vitcube.service.settings import Settings
from vitcube.service.tables import Artifact, Search, Trial

log = logging.getLogger("vitcube.artifacts")

BLOCK = 1024 * 1024  # bytes per write to the store and per chunk read back


class ArtifactTooLarge(ServiceError):
    """An upload over `max_artifact_bytes`: nothing was stored."""

    status_code = 413


class ArtifactUnavailable(ServiceError):
    """The artifact store could not be written or read (unreachable, full): retry later."""

    status_code = 503


def default_artifact_url(database_url: str) -> str:
    """`artifacts/` beside the SQLite file; `./vitcube-artifacts` for PostgreSQL (or SQLite in
    memory)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return str(Path(url.database).resolve().parent / "artifacts")
    return str(Path("vitcube-artifacts").resolve())


@dataclass(frozen=True)
class Written:
    """What `write_stream` stored."""

    bytes: int
    sha256: str


class ArtifactStore:
    """Objects under one fsspec URL, by server-made key (see the module docstring)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **(options or {}))
        self.root = root.rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        # Directories are made by the first upload, not here: an app that never stores an
        # artifact leaves no empty folder behind.
        self.local = bool({"file", "local"} & set(protocols))

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        url = settings.artifact_url or default_artifact_url(settings.database_url)
        return cls(url, settings.artifact_options)

    @staticmethod
    def new_key(*, search_id: int, trial_id: int, attempt: int, kind: ArtifactKind) -> str:
        """A fresh key: every upload gets its own object, so a replaced one can be deleted
        after the new one is recorded, and a reader never sees one half-overwritten."""
        return (
            f"searches/{search_id}/trials/{trial_id}/attempt-{attempt}/{kind}-{uuid.uuid4().hex}.pt"
        )

    def path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"not a store key: {key!r}")  # keys are the server's own
        return f"{self.root}/{key}"

    async def write_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int
    ) -> Written:
        """Stream `chunks` into a new object `key`; raise ArtifactTooLarge past `max_bytes`.

        On any error (too large, the client went away, the store failed) the partial object is
        removed and the error raised: nothing is visible under `key`.
        """
        final = self.path(key)
        target = f"{final}.partial" if self.local else final
        digest = hashlib.sha256()
        total = 0
        pending = bytearray()

        def open_target() -> Any:
            if self.local:
                self.fs.makedirs(self.fs._parent(target), exist_ok=True)
            return self.fs.open(target, "wb")

        def write(block: bytes) -> None:
            digest.update(block)
            handle.write(block)

        try:
            handle = await anyio.to_thread.run_sync(open_target)
        except OSError as exc:
            raise ArtifactUnavailable(f"the artifact store cannot be written: {exc}") from exc
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                total += len(chunk)
                if total > max_bytes:
                    raise ArtifactTooLarge(
                        f"upload over {max_bytes} bytes (VITCUBE_MAX_ARTIFACT_BYTES); nothing "
                        "was stored: raise the limit or upload less"
                    )
                pending += chunk
                if len(pending) >= BLOCK:
                    block, pending = bytes(pending), bytearray()
                    await anyio.to_thread.run_sync(write, block)
            if pending:
                await anyio.to_thread.run_sync(write, bytes(pending))
            await anyio.to_thread.run_sync(handle.close)  # an object store commits here
            if self.local:
                await anyio.to_thread.run_sync(self.fs.mv, target, final)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._abandon, handle, target)
            if isinstance(exc, OSError):
                raise ArtifactUnavailable(f"the artifact store failed: {exc}") from exc
            raise
        return Written(bytes=total, sha256=digest.hexdigest())

    def _abandon(self, handle: Any, target: str) -> None:
        """Drop a half-written object: abort an object store's multipart upload, unlink a local
        partial file."""
        try:
            discard = getattr(handle, "discard", None)
            if discard is not None and not self.local:
                discard()
                handle.closed = True  # closing now would commit what was discarded
            elif not handle.closed:
                handle.close()
        except Exception:
            log.warning("could not abandon the upload to %s", target, exc_info=True)
        try:
            if self.fs.exists(target):
                self.fs.rm(target)
        except Exception:
            log.warning("could not remove the partial object %s", target, exc_info=True)

    def read(self, key: str) -> Iterator[bytes]:
        """The object's bytes in blocks of BLOCK (for a StreamingResponse). The object is opened
        now: NotFound here, not halfway through a response."""
        try:
            handle = self.fs.open(self.path(key), "rb")
        except FileNotFoundError as exc:
            raise NotFound(f"artifact {key} is missing from the artifact store") from exc
        except OSError as exc:
            raise ArtifactUnavailable(f"the artifact store cannot be read: {exc}") from exc

        def blocks() -> Iterator[bytes]:
            with handle:
                while block := handle.read(BLOCK):
                    yield block

        return blocks()

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self.path(key)))

    def delete(self, keys: Iterable[str]) -> int:
        """Delete these objects; how many were there. Missing ones are ignored, failures logged
        (never raised: deletion follows a committed change and must not undo its answer)."""
        deleted = 0
        for key in keys:
            try:
                self.fs.rm(self.path(key))
                deleted += 1
            except FileNotFoundError:
                pass
            except Exception:
                log.warning("could not delete artifact %s", key, exc_info=True)
        return deleted


# -- what the server records ---------------------------------------------------------------------


def public(row: Artifact) -> ArtifactPublic:
    return ArtifactPublic(
        kind=row.kind,  # type: ignore[arg-type]
        trial_id=row.trial_id,
        search_id=row.search_id,
        bytes=row.bytes,
        sha256=row.sha256,
        epoch=row.epoch,
        step=row.step,
        attempt=row.attempt,
        created_at=row.created_at,
    )


def checkpoint_url(trial_id: int) -> str:
    return f"/api/trials/{trial_id}/checkpoint"


def checkpoint_ref(
    trial_id: int,
    *,
    epoch: int | None,
    step: int | None,
    bytes: int | None,
    sha256: str | None,
    attempt: int | None,
    created_at: Any,
) -> CheckpointRef | None:
    """The lease's `checkpoint` from an artifacts row's columns (None: the trial has none)."""
    if bytes is None:
        return None
    return CheckpointRef(
        epoch=epoch or 0,
        step=step or 0,
        bytes=bytes,
        sha256=sha256,
        attempt=attempt or 0,
        url=checkpoint_url(trial_id),
        created_at=created_at,
    )


def _current(session: Session, trial_id: int, lease_id: str, *, lock: bool) -> Trial:
    """The trial, if `lease_id` is its current lease and it is running; else Conflict."""
    query = select(Trial).where(Trial.id == trial_id)
    if lock:
        query = query.with_for_update()  # PostgreSQL: no complete or re-lease in between
    trial = session.scalar(query)
    if trial is None:
        raise NotFound(f"trial {trial_id} does not exist")
    if trial.lease_id != lease_id:
        raise Conflict(
            f"lease {lease_id} is not the current lease of trial {trial_id} (it expired or the "
            f"trial was re-leased; state {trial.state}): abandon the trial, nothing was stored"
        )
    if trial.state != "running":
        raise Conflict(f"trial {trial_id} is {trial.state}; its artifacts can no longer change")
    return trial


def check_lease(session: Session, trial_id: int, lease_id: str) -> tuple[int, int]:
    """(search id, attempts) of a running trial under `lease_id`, before an upload is read."""
    trial = _current(session, trial_id, lease_id, lock=False)
    return trial.search_id, trial.attempts


def record(
    session: Session,
    *,
    trial_id: int,
    lease_id: str,
    kind: ArtifactKind,
    key: str,
    written: Written,
    epoch: int | None = None,
    step: int = 0,
) -> tuple[ArtifactPublic, str | None]:
    """Make the uploaded object `key` the trial's `kind`: (its public view, the replaced key
    to delete after commit, or None). Conflict when the lease is no longer current: the caller
    then deletes `key` itself."""
    trial = _current(session, trial_id, lease_id, lock=True)
    old = session.scalar(
        select(Artifact).where(Artifact.trial_id == trial_id, Artifact.kind == kind)
    )
    replaced = None
    if old is not None:
        replaced = old.key
        session.delete(old)
        session.flush()  # the unique (trial_id, kind) row goes before the new one comes
    row = Artifact(
        search_id=trial.search_id,
        trial_id=trial_id,
        kind=kind,
        key=key,
        bytes=written.bytes,
        sha256=written.sha256,
        epoch=epoch,
        step=step,
        attempt=trial.attempts,
    )
    session.add(row)
    session.flush()
    return public(row), replaced


def latest(session: Session, trial_id: int, kind: ArtifactKind) -> Artifact | None:
    return session.scalar(
        select(Artifact).where(Artifact.trial_id == trial_id, Artifact.kind == kind)
    )


def discard_checkpoint(session: Session, trial_id: int, lease_id: str, reason: str) -> list[str]:
    """The worker could not load the trial's checkpoint: drop its row and say why in the trial's
    metrics (`checkpoint_discarded`); the keys to delete after commit."""
    trial = _current(session, trial_id, lease_id, lock=True)
    keys = list(
        session.scalars(
            delete(Artifact)
            .where(Artifact.trial_id == trial_id, Artifact.kind == "checkpoint")
            .returning(Artifact.key)
        )
    )
    # A new dict: the JSON column notices reassignment, not mutation in place.
    trial.metrics = {**(trial.metrics or {}), "checkpoint_discarded": reason[:2000]}
    return keys


def of_search(session: Session, search_id: int) -> list[ArtifactPublic]:
    rows = session.scalars(
        select(Artifact)
        .where(Artifact.search_id == search_id)
        .order_by(Artifact.trial_id, Artifact.kind)
    )
    return [public(row) for row in rows]


def by_trial(session: Session, trial_ids: list[int]) -> dict[int, dict[str, Artifact]]:
    """Each trial's artifacts by kind."""
    out: dict[int, dict[str, Artifact]] = {}
    if not trial_ids:
        return out
    for row in session.scalars(select(Artifact).where(Artifact.trial_id.in_(trial_ids))):
        out.setdefault(row.trial_id, {})[row.kind] = row
    return out


def bytes_by_search(session: Session, search_ids: list[int]) -> dict[int, int]:
    if not search_ids:
        return {}
    rows = session.execute(
        select(Artifact.search_id, func.coalesce(func.sum(Artifact.bytes), 0))
        .where(Artifact.search_id.in_(search_ids))
        .group_by(Artifact.search_id)
    )
    return {search_id: int(total) for search_id, total in rows}


def delete_of_search(session: Session, search_id: int) -> tuple[list[str], int]:
    """Drop every artifact row of the search: (keys to delete after commit, their bytes)."""
    if session.get(Search, search_id) is None:
        raise NotFound(f"search {search_id} does not exist")
    rows = session.execute(
        delete(Artifact)
        .where(Artifact.search_id == search_id)
        .returning(Artifact.key, Artifact.bytes)
    ).all()
    return [key for key, _ in rows], sum(int(n) for _, n in rows)


def delete_checkpoint_rows(session: Session, trial_id: int) -> list[str]:
    """A completed trial's checkpoint is no longer needed: its row goes in the caller's
    transaction; the keys to delete after commit."""
    return list(
        session.scalars(
            delete(Artifact)
            .where(Artifact.trial_id == trial_id, Artifact.kind == "checkpoint")
            .returning(Artifact.key)
        )
    )


def retain(session: Session, search_id: int, *, keep_weights: int) -> list[str]:
    """Retention when a search ends: keep the weights of its Pareto front (the metric's score vs
    MACs, as /pareto computes it) and of its best `keep_weights` trials by score; drop every
    other weights row and every checkpoint. The keys to delete after commit."""
    metric = metric_of(session.scalar(select(Search.metric).where(Search.id == search_id)))
    completed = session.execute(
        select(Trial.id, score_of(metric, Trial.value).label("score"), Trial.macs)
        .where(Trial.search_id == search_id, Trial.state == "completed", Trial.value.is_not(None))
        .order_by(Trial.id)
    ).all()
    keep: set[int] = set()
    if completed:
        from vitcube.search import pareto_front  # lazily: the same front the API serves

        keep.update(completed[i].id for i in pareto_front([(t.score, t.macs) for t in completed]))
        best = sorted(completed, key=lambda t: (-t.score, t.macs, t.id))[:keep_weights]
        keep.update(t.id for t in best)
    doomed = (Artifact.search_id == search_id) & (
        (Artifact.kind == "checkpoint") | Artifact.trial_id.not_in(keep or {-1})
    )
    return list(session.scalars(delete(Artifact).where(doomed).returning(Artifact.key)))
