"""vitcube.client.Client as a user meets it: typed answers from a real server on both backends,
the server's own words in every refusal, and retries that never act twice.

The retry tests talk to `ScriptedServer`, a tiny real HTTP server (http.server in a thread) that
answers from a script and records every request it read, so a test counts what was sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas
import pytest

from tests.backends import LiveServer, free_port
from tests.factories import (
    VIEWER_TOKEN,
    WORKER_TOKEN,
    report_body,
    search_body,
    surrogate_top1,
    wait_for,
)
from vitcube.client import (
    AuthError,
    Backoff,
    Client,
    NotFound,
    RequestRejected,
    ServerRefused,
    ServerUnavailable,
)
from vitcube.contract import FormulaPublic, SearchPlan, SearchPublic, TrialLease, TrialPublic
from vitcube.service.db import Database

QUICK = Backoff(initial_s=0.05, max_s=0.2)
FACTOR_COLUMNS = ["r", "d_i", "d_m", "w"]
MISSING_TOKEN = "missing token: send `Authorization: Bearer <token>`"


def _complete(worker: Client, n: int) -> list[TrialLease]:
    """Lease and complete `n` trials as a worker would, top-1 from the toy landscape."""
    done = []
    for _ in range(n):
        lease: TrialLease = wait_for(worker.lease)
        top1 = surrogate_top1(lease.effective_factors)
        worker.complete(lease.id, report_body(lease.model_dump(mode="json"), top1=top1))
        done.append(lease)
    return done


# -- searches -----------------------------------------------------------------------------------


def test_a_created_search_is_listed_read_and_stopped(vc: Client) -> None:
    search = vc.create_search(search_body(name="created by the client"))
    assert isinstance(search, SearchPublic)
    assert search.name == "created by the client" and search.state == "running"
    assert search.m0 > 0 and search.max_macs == int(0.5 * search.m0)
    assert search.dataset["name"] == "digits" and search.max_trials == 6

    assert [s.id for s in vc.list_searches()] == [search.id]
    read = vc.get_search(search.id)
    assert (read.id, read.name, read.m0, read.max_macs) == (
        search.id,
        search.name,
        search.m0,
        search.max_macs,
    )

    queued = wait_for(lambda: vc.trials(search.id, states=["queued"]))
    stopped = vc.stop_search(search.id)
    assert stopped.state == "stopped"
    assert vc.get_search(search.id).state == "stopped"
    # Its queued trials are stopped with it: nothing is left for a worker.
    assert vc.trials(search.id, states=["queued"]) == []
    stopped_trials = vc.trials(search.id, states=["stopped"])
    assert {t.id for t in queued} <= {t.id for t in stopped_trials}


def test_validate_says_what_create_would_make_and_creates_nothing(vc: Client) -> None:
    body = search_body()
    plan = vc.validate_search(body)
    assert isinstance(plan, SearchPlan)
    assert plan.max_macs == int(0.5 * plan.m0)
    assert plan.c == pytest.approx(plan.max_macs / plan.m0)
    assert plan.references, "a half budget has width-only and compound references"
    for reference in plan.references:
        assert reference.kind.startswith("reference:")
        assert 0 < reference.macs <= plan.max_macs and reference.params > 0
    assert plan.smallest_macs <= min(r.macs for r in plan.references)
    assert plan.smallest_macs <= plan.max_macs <= plan.m0 <= plan.largest_macs
    assert plan.training["epochs"] == 3  # the body's recipe, defaults filled in
    assert vc.list_searches() == []

    # What it said is what create makes: the same budget, the same reference networks.
    search = vc.create_search(body)
    assert (search.m0, search.max_macs) == (plan.m0, plan.max_macs)

    def references() -> list[tuple[str, int]] | None:
        found = [(t.kind, t.macs) for t in vc.trials(search.id) if t.kind != "search"]
        return sorted(found) if len(found) == len(plan.references) else None

    assert wait_for(references) == sorted((r.kind, r.macs) for r in plan.references)


def test_a_viewer_may_validate_but_not_create(server: LiveServer, vc: Client) -> None:
    with Client(server.url, VIEWER_TOKEN, retry_for_s=5.0) as viewer:
        assert viewer.validate_search(search_body()).max_macs > 0
        with pytest.raises(AuthError) as refused:
            viewer.create_search(search_body())
    assert refused.value.status == 403
    assert "admin" in refused.value.detail
    assert vc.list_searches() == []


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"budget": {"c": 0.01}}, "raise the budget"),
        ({"space": {"r": [1.2, 0.8]}}, "space.r: min 1.2 must be below max 0.8"),
    ],
    ids=["budget-too-small", "space-min-above-max"],
)
def test_a_bad_body_is_rejected_with_the_servers_words(
    vc: Client, overrides: dict[str, Any], says: str
) -> None:
    body = search_body(**overrides)
    with pytest.raises(RequestRejected) as validated:
        vc.validate_search(body)
    assert validated.value.status == 422
    assert says in validated.value.detail
    assert "Traceback" not in validated.value.detail

    with pytest.raises(RequestRejected) as created:
        vc.create_search(body)
    assert created.value.status == 422
    assert created.value.detail == validated.value.detail  # dry run and create agree
    assert vc.list_searches() == []


def test_an_unknown_search_is_not_found(vc: Client) -> None:
    calls: list[Callable[[int], object]] = [
        vc.get_search,
        vc.trials,
        vc.stop_search,
        vc.pareto,
        vc.formula,
    ]
    for call in calls:
        with pytest.raises(NotFound) as missing:
            call(999)
        assert missing.value.status == 404
        assert missing.value.detail == "search 999 does not exist"


def test_a_wrong_or_missing_token_is_an_auth_error(server: LiveServer) -> None:
    for token in ("not-a-token-of-this-server-000000", None):
        with (
            Client(server.url, token, retry_for_s=5.0) as stranger,
            pytest.raises(AuthError) as refused,
        ):
            stranger.list_searches()
        assert refused.value.status == 401
        assert refused.value.detail in ("unknown token", MISSING_TOKEN)
    with (
        Client(server.url, WORKER_TOKEN, retry_for_s=5.0) as worker,
        pytest.raises(AuthError) as refused,
    ):
        worker.create_search(search_body())
    assert refused.value.status == 403


# -- trials, the Pareto front, the formula ------------------------------------------------------


def test_trials_are_filtered_by_state_on_the_server(vc: Client, worker_client: Client) -> None:
    search = vc.create_search(search_body(parallelism=3))
    wait_for(lambda: len(vc.trials(search.id, states=["queued"])) == 3)
    lease = wait_for(worker_client.lease)
    # The planner keeps three trials queued or running: once it has, nothing changes.
    wait_for(lambda: len(vc.trials(search.id, states=["queued"])) == 2)

    running = vc.trials(search.id, states=["running"])
    assert [(t.id, t.state, t.worker) for t in running] == [(lease.id, "running", "client-tests:0")]
    queued = vc.trials(search.id, states=["queued"])
    assert all(isinstance(t, TrialPublic) and t.state == "queued" for t in queued)
    assert lease.id not in {t.id for t in queued}
    both = vc.trials(search.id, states=["queued", "running"])
    assert [t.id for t in both] == sorted(t.id for t in queued + running)
    assert [t.id for t in vc.trials(search.id)] == [t.id for t in both]
    assert vc.trials(search.id, states=["completed"]) == []

    worker_client.complete(lease.id, report_body(lease.model_dump(mode="json"), top1=0.7))
    completed = vc.trials(search.id, states=["completed"])
    assert [(t.id, t.top1) for t in completed] == [(lease.id, 0.7)]


def test_an_unknown_state_is_rejected(vc: Client) -> None:
    search = vc.create_search(search_body())
    with pytest.raises(RequestRejected) as refused:
        vc.trials(search.id, states=["finished"])
    assert refused.value.status == 422
    assert "queued" in refused.value.detail  # the message lists the states there are


def test_pareto_and_its_frame_hold_the_non_dominated_completed_trials(
    vc: Client, worker_client: Client
) -> None:
    search = vc.create_search(search_body(max_trials=6, parallelism=3))
    done = _complete(worker_client, 5)
    completed = vc.trials(search.id, states=["completed"])
    assert sorted(t.id for t in completed) == sorted(lease.id for lease in done)

    front = vc.pareto(search.id)
    assert front and all(isinstance(t, TrialPublic) and t.state == "completed" for t in front)
    assert [t.macs for t in front] == sorted(t.macs for t in front)
    tops = [t.top1 or 0.0 for t in front]
    assert tops == sorted(tops) and len(set(tops)) == len(tops)  # more MACs must buy accuracy
    for trial in completed:  # every trial off the front is dominated by one on it
        if trial.id not in {t.id for t in front}:
            assert trial.top1 is not None
            assert any(t.macs <= trial.macs and (t.top1 or 0.0) >= trial.top1 for t in front)

    frame = vc.pareto_frame(search.id)
    assert isinstance(frame, pandas.DataFrame)
    assert {"id", "macs", "top1", *FACTOR_COLUMNS} <= set(frame.columns)
    assert frame["id"].tolist() == [t.id for t in front]
    assert frame["top1"].tolist() == pytest.approx(tops)
    for column in FACTOR_COLUMNS:
        assert frame[column].tolist() == pytest.approx([t.effective_factors[column] for t in front])


def _surrogate_score(arch: dict[str, Any], epochs: int, seed: int) -> list[float]:
    from vitcube.models import Arch
    from vitcube.workers.surrogate import surrogate_curve

    return surrogate_curve(Arch.from_dict(arch), epochs=epochs, seed=seed)


def test_the_formula_is_refused_until_enough_trials_completed(vc: Client, db: Database) -> None:
    from vitcube.service.synthetic import fill_search

    search = vc.create_search(search_body(max_trials=40, parallelism=1))
    with pytest.raises(RequestRejected) as early:
        vc.formula(search.id, fresh=True)
    assert early.value.status == 409
    assert "completed trials" in early.value.detail

    fill_search(db, search.id, 12, score=_surrogate_score, seed=0)
    formula = vc.formula(search.id, fresh=True)
    assert isinstance(formula, FormulaPublic)
    assert formula.fitted_on["trials"] == 12
    assert formula.c == pytest.approx(search.max_macs / search.m0)
    assert formula.max_macs == search.max_macs and 0 < formula.macs <= formula.max_macs
    assert set(formula.factors) == set(FACTOR_COLUMNS)
    smaller = vc.formula(search.id, c=0.3)
    assert smaller.c == 0.3 and smaller.macs <= smaller.max_macs < search.max_macs


# -- retries ------------------------------------------------------------------------------------

CLOSE = "close"  # read the request, then close the connection without answering
HANG = "hang"  # read the request, then answer nothing until the test ends
Answer = tuple[int, Any] | str


class ScriptedServer:
    """A real HTTP server on 127.0.0.1 answering each request with the script's next answer
    (a 500 once the script runs out); `requests` lists "METHOD /path" of every request read."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[str] = []
        self.released = threading.Event()
        self._lock = threading.Lock()
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with script._lock:
                    script.requests.append(f"{self.command} {self.path}")
                    answer = script.answers.pop(0) if script.answers else (500, "script ran out")
                if answer == HANG:
                    script.released.wait(30)
                if isinstance(answer, str):
                    self.close_connection = True
                    return
                status, detail_or_body = answer
                body = detail_or_body if status < 300 else {"detail": detail_or_body}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET

            def log_message(self, *_: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.released.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)

    def client(self, **options: Any) -> Client:
        return Client(self.url, "token", **{"retry_for_s": 5.0, "backoff": QUICK, **options})


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(*answers: Answer) -> ScriptedServer:
        servers.append(ScriptedServer(*answers).__enter__())
        return servers[-1]

    yield start
    for server in servers:
        server.__exit__()


@pytest.mark.parametrize("call", ["list", "create"])
def test_a_dead_server_is_unavailable_after_retry_for_s(call: str) -> None:
    retries: list[str] = []
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Client(url, "token", retry_for_s=1.0, backoff=QUICK, log=retries.append) as client:
        started = time.monotonic()
        with pytest.raises(ServerUnavailable, match="Connect") as unavailable:
            if call == "list":
                client.list_searches()
            else:  # nothing was sent, so even a create is tried again
                client.create_search(search_body())
        elapsed = time.monotonic() - started
    assert 0.7 <= elapsed < 3.0, elapsed
    assert len(retries) >= 3
    assert "may have taken effect" not in str(unavailable.value)


def test_a_503_is_retried_until_the_server_answers(scripted: Callable[..., ScriptedServer]) -> None:
    server = scripted((503, "restarting"), (200, []))
    with server.client() as client:
        assert client.list_searches() == []
    assert server.requests == ["GET /api/searches"] * 2


def test_a_server_that_stays_503_is_unavailable(scripted: Callable[..., ScriptedServer]) -> None:
    server = scripted(*[(503, "the pool is full")] * 100)
    with server.client(retry_for_s=0.5) as client, pytest.raises(ServerUnavailable) as failed:
        client.list_searches()
    assert "503" in str(failed.value) and "the pool is full" in str(failed.value)
    assert len(server.requests) >= 2


def test_a_500_is_not_retried(scripted: Callable[..., ScriptedServer]) -> None:
    server = scripted((500, "internal error: the database fell over"), (200, []))
    with server.client() as client, pytest.raises(ServerRefused) as refused:
        client.list_searches()
    assert type(refused.value) is ServerRefused
    assert refused.value.status == 500
    assert refused.value.detail == "internal error: the database fell over"
    assert server.requests == ["GET /api/searches"]


@pytest.mark.parametrize("answer", [CLOSE, HANG])
def test_a_create_whose_answer_is_lost_is_not_repeated(
    scripted: Callable[..., ScriptedServer], answer: str
) -> None:
    server = scripted(answer, (201, {}))
    with server.client(timeout_s=0.5) as client, pytest.raises(ServerUnavailable) as lost:
        client.create_search(search_body())
    assert "may have taken effect" in str(lost.value)
    assert server.requests == ["POST /api/searches"]


@pytest.mark.parametrize("answer", [CLOSE, HANG])
def test_a_read_whose_answer_is_lost_is_retried(
    scripted: Callable[..., ScriptedServer], answer: str
) -> None:
    server = scripted(answer, (200, []))
    with server.client(timeout_s=0.5) as client:
        assert client.list_searches() == []
    assert server.requests == ["GET /api/searches"] * 2
