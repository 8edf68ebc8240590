"""The analyst: a background thread that keeps every search's stored analysis current.

After completions (it is woken by them, and looks every POLL_S seconds for those another replica
took), it finds the searches whose completed set differs from the one their stored analysis was
fitted on and recomputes them through service.results, oldest first. Work is coalesced: one
computation per search at a time (results.compute's claim holds across replicas), whatever
completes meanwhile is picked up by the next pass (the latest data wins), and a search is not
recomputed more often than every MIN_GAP_S seconds, so a search completing a trial a second does
not keep a core fitting GPs. Requests never wait for this thread. Imports service.results.
"""

from __future__ import annotations

import logging
import threading
import time

from vitcube.service.results import Results

log = logging.getLogger("vitcube.analyst")

POLL_S = 2.0
MIN_GAP_S = 5.0  # at most one computation per search every this many seconds
RETRY_AFTER_ERROR_S = 60.0


class Analyst:
    """Background analysis of every search whose completed trials changed; `wake()` to look now."""

    def __init__(self, results: Results, *, poll_s: float = POLL_S, min_gap_s: float = MIN_GAP_S):
        self.results = results
        self.poll_s = poll_s
        self.min_gap_s = min_gap_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[int, float] = {}  # search id -> monotonic time of its last computation
        self._failed: dict[int, float] = {}  # search id -> when its last computation failed

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="vitcube-analyst", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            try:
                self.run_pass()
            except Exception:  # a broken pass must not end the thread; the next one retries
                log.exception("analysis pass failed")

    def stale(self) -> list[int]:
        """Searches whose stored analysis is not of their current completed set, oldest first."""
        current = self.results.versions()
        stored = self.results.stored_versions()
        return sorted(sid for sid, version in current.items() if stored.get(sid) != version)

    def run_pass(self) -> int:
        """Recompute what is stale and due; returns how many searches were computed."""
        done = 0
        for search_id in self.stale():
            if self._stop.is_set():
                break
            now = time.monotonic()
            if now - self._last.get(search_id, -1e9) < self.min_gap_s:
                continue  # the next pass, POLL_S from now, takes it
            if now - self._failed.get(search_id, -1e9) < RETRY_AFTER_ERROR_S:
                continue
            self._last[search_id] = now
            try:
                if self.results.compute(search_id):
                    done += 1
                self._failed.pop(search_id, None)
            except Exception:
                log.exception("analysis of search %d failed; retrying later", search_id)
                self._failed[search_id] = now
        return done


__all__ = ["Analyst"]
