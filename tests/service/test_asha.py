"""ASHA in the service, on SQLite and PostgreSQL: the planner promotes exactly the trials the
rule names, references train in one segment, paused trials stay partial results, the compute
budget holds, and a restarted server carries on from the database alone.

The worker here is the test: it leases one trial at a time (parallelism 1), so every planning
decision sees every result reported before it, and the test can check each decision against
`search.asha.promotable` on its own record of the rungs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import (
    ADMIN,
    VIEWER,
    WORKER,
    create_search,
    lease_one,
    make_settings,
    search_body,
    wait_for,
)
from vitcube.contract import AshaSchedule, rung_epochs
from vitcube.search.asha import promotable, start_rung
from vitcube.service.app import create_app

EPOCHS = 4
ASHA = {"kind": "asha", "min_epochs": 1, "eta": 2}
RUNGS = rung_epochs(AshaSchedule(kind="asha", min_epochs=1, eta=2), EPOCHS)  # (1, 2, 4)
TRAIN_IMAGES = 1437


def top1_at(lease: dict[str, Any]) -> float:
    """A deterministic result whose ranks cross between rungs: wide networks start slower."""
    w = lease["effective_factors"]["w"]
    r = lease["effective_factors"]["r"]
    progress = lease["to_epoch"] / EPOCHS
    return round(min(0.99, 0.3 + 0.4 * r * progress**w + 0.05 * w), 6)


class Driver:
    """One sequential worker with a record of every rung result, checking each lease."""

    def __init__(self, client: TestClient, search_id: int) -> None:
        self.client = client
        self.search_id = search_id
        self.results: dict[int, dict[int, float]] = {epoch: {} for epoch in RUNGS}
        self.paused: dict[int, int] = {}  # trial id -> the rung epoch it waits at
        self.segments: list[tuple[int, int]] = []  # (trial id, to_epoch) of every lease
        self.references: set[int] = set()
        self.brackets = False  # new configurations may start at a later rung

    def state(self) -> str:
        response = self.client.get(f"/api/searches/{self.search_id}", headers=VIEWER)
        return str(response.json()["state"])

    def step(self) -> bool:
        """Lease and complete one trial; False once the search is over."""

        def leased() -> dict[str, Any] | str:
            response = self.client.post("/api/trials/lease", json={"worker": "w"}, headers=WORKER)
            if response.status_code == 200:
                return dict(response.json())
            return "over" if self.state() != "running" else ""

        lease = wait_for(leased, timeout_s=60)
        if lease == "over":
            return False
        assert isinstance(lease, dict)
        self.check(lease)
        self.segments.append((lease["id"], lease["to_epoch"]))
        top1 = top1_at(lease)
        report = {
            "lease_id": lease["lease_id"],
            "top1": top1,
            "surrogate": True,
            "train_images": TRAIN_IMAGES,
            "curve": [{"epoch": e, "val_top1": top1} for e in range(1, lease["to_epoch"] + 1)],
        }
        done = self.client.post(f"/api/trials/{lease['id']}/complete", json=report, headers=WORKER)
        assert done.status_code == 200, done.text
        if lease["kind"] == "search":
            self.results[lease["to_epoch"]][lease["id"]] = top1
        expected = "completed" if lease["to_epoch"] == EPOCHS else "paused"
        assert done.json()["state"] == expected
        if expected == "paused":
            self.paused[lease["id"]] = lease["to_epoch"]
        return True

    def check(self, lease: dict[str, Any]) -> None:
        """The lease is what ASHA hands out next, given every result so far."""
        if lease["kind"] != "search":
            assert (lease["from_epoch"], lease["to_epoch"]) == (0, EPOCHS)  # one segment
            self.references.add(lease["id"])
            return
        wanted = self.promotions()
        if lease["id"] in self.paused:
            at = self.paused.pop(lease["id"])
            assert lease["to_epoch"] == RUNGS[RUNGS.index(at) + 1]  # the next rung, no skip
            assert lease["id"] in wanted, f"trial {lease['id']} promoted against the rule"
        else:
            if not self.brackets:
                assert lease["to_epoch"] == RUNGS[0]  # a new configuration: the first rung
            assert wanted == [], f"a new configuration was started while {wanted} were due"

    def promotions(self) -> list[int]:
        due: list[int] = []
        for epoch in RUNGS[:-1]:
            waiting = [t for t, at in self.paused.items() if at == epoch]
            due += promotable(self.results[epoch], waiting, ASHA["eta"])
        return due


def _asha_search(client: TestClient, **overrides: Any) -> dict[str, Any]:
    body = {
        "max_trials": 10,
        "parallelism": 1,
        "training": {"epochs": EPOCHS, "batch_size": 16},
        "schedule": ASHA,
        **overrides,
    }
    return create_search(client, **body)


def test_asha_promotes_exactly_the_trials_the_rule_names_and_ends_with_partial_results(
    client: TestClient,
) -> None:
    search = _asha_search(client)
    assert search["schedule"] == {**ASHA, "brackets": 1}
    assert [r["epoch"] for r in search["rungs"]] == list(RUNGS)
    driver = Driver(client, search["id"])
    while driver.step():
        pass
    # Every segment was trained once: no trial was promoted twice to the same rung.
    assert len(driver.segments) == len(set(driver.segments))
    final = client.get(f"/api/searches/{search['id']}", headers=VIEWER).json()
    trials = client.get(f"/api/searches/{search['id']}/trials", headers=VIEWER).json()
    assert final["state"] == "completed"
    assert final["counts"]["paused"] > 0 and final["counts"]["completed"] >= 3  # refs + search
    promoted_to_last = [t for t in trials if t["kind"] == "search" and t["state"] == "completed"]
    assert promoted_to_last, "no search trial reached the last rung"
    for t in promoted_to_last:
        assert set(t["rung_top1"]) == {str(e) for e in RUNGS}
        assert t["rung"] == len(RUNGS) - 1 and t["epochs_trained"] == EPOCHS
    for t in trials:
        if t["state"] == "paused":
            assert t["top1"] == t["rung_top1"][str(t["to_epoch"])]  # its partial result
            assert t["epochs_trained"] == t["to_epoch"] < EPOCHS
    # The rung view counts what the trials say.
    reached = [sum(str(e) in t["rung_top1"] for t in trials) for e in RUNGS]
    assert [r["reached"] for r in final["rungs"]] == reached
    assert [r["promoted"] for r in final["rungs"]] == [reached[1], reached[2] - 2, 0]  # 2 refs
    # Compute: the epochs the trials' training reached, and x MACs x images.
    assert final["epochs_trained"] == sum(t["epochs_trained"] for t in trials)
    assert final["epochs_trained"] < len(trials) * EPOCHS  # what `full` would train
    assert final["train_macs"] == pytest.approx(
        sum(t["epochs_trained"] * t["macs"] * TRAIN_IMAGES for t in trials)
    )
    # The front and the best are completed (last-rung) results only.
    pareto = client.get(f"/api/searches/{search['id']}/pareto", headers=VIEWER).json()
    front = pareto if isinstance(pareto, list) else pareto["trials"]
    assert front and all(t["state"] == "completed" for t in front)
    assert final["best"]["state"] == "completed"
    # fresh: the server's background analyst may have stored a fit of fewer trials meanwhile.
    analysis = client.get(
        f"/api/searches/{search['id']}/analysis", params={"fresh": True}, headers=VIEWER
    )
    assert analysis.status_code == 200, analysis.text
    completed = sum(t["state"] == "completed" for t in trials)
    assert analysis.json()["fitted_on"] == {"trials": completed, "state": "completed", "epochs": 4}


def test_references_and_full_searches_train_in_one_segment(client: TestClient) -> None:
    search = create_search(
        client, training={"epochs": EPOCHS, "batch_size": 16}, schedule={"kind": "full"}
    )
    assert search["schedule"] == {"kind": "full"}
    lease = lease_one(client)
    assert (lease["from_epoch"], lease["to_epoch"]) == (0, EPOCHS)


def test_a_search_without_a_schedule_gets_asha_when_its_epochs_allow_three_rungs(
    client: TestClient,
) -> None:
    long = create_search(client, training={"epochs": 81, "batch_size": 16})
    assert long["schedule"] == {"kind": "asha", "min_epochs": 3, "eta": 3, "brackets": 2}
    assert [r["epoch"] for r in long["rungs"]] == [3, 9, 27, 81]
    short = create_search(client, training={"epochs": 8, "batch_size": 16})
    assert short["schedule"] == {"kind": "full"}


def test_brackets_start_new_configurations_at_later_rungs_in_hyperbands_proportions(
    client: TestClient,
) -> None:
    search = _asha_search(client, schedule={**ASHA, "brackets": 3}, max_trials=9)
    driver = Driver(client, search["id"])
    starts: list[int] = []
    while True:
        before = {t for t, _ in driver.segments}
        driver.brackets = True
        if not driver.step():
            break
        trial, to_epoch = driver.segments[-1]
        if trial not in before and trial not in driver.references:
            starts.append(RUNGS.index(to_epoch))
    expected: list[int] = []
    counts = [0, 0, 0]
    for _ in starts:
        s = start_rung(counts, eta=2, brackets=3)
        counts[s] += 1
        expected.append(s)
    assert starts == expected and {0, 1, 2} <= set(starts)  # weights 4/3 : 1 : 1


def test_the_compute_budget_bounds_what_is_trained(client: TestClient) -> None:
    # Two references (4 epochs each) and then first-rung trials (1 epoch each) fit in 11.
    search = _asha_search(client, max_trials=20, max_train_epochs=11)
    driver = Driver(client, search["id"])
    while driver.step():
        pass
    final = client.get(f"/api/searches/{search['id']}", headers=VIEWER).json()
    assert final["state"] == "completed" and final["max_train_epochs"] == 11
    assert 8 < final["epochs_trained"] <= 11
    assert sum(final["counts"].values()) < 20  # it ended on the budget, not on max_trials


@pytest.fixture
def restartable(database_url: str) -> Iterator[Any]:
    """Start the app on the test's database; call again to start a new one (a restart)."""
    opened: list[TestClient] = []

    def start() -> TestClient:
        for old in opened:
            old.__exit__(None, None, None)
        opened.clear()
        client = TestClient(create_app(make_settings(database_url)))
        client.__enter__()
        opened.append(client)
        return client

    yield start
    for old in opened:
        old.__exit__(None, None, None)


def test_a_restarted_server_carries_on_promoting_from_the_database(restartable: Any) -> None:
    client = restartable()
    search = _asha_search(client)
    driver = Driver(client, search["id"])
    for _ in range(7):
        assert driver.step()
    assert client.get(f"/api/searches/{search['id']}", headers=VIEWER).json()["counts"]["paused"]
    driver.client = restartable()  # a new process: nothing but the database is kept
    while driver.step():
        pass
    final = driver.client.get(f"/api/searches/{search['id']}", headers=ADMIN).json()
    assert final["state"] == "completed"
    assert len(driver.segments) == len(set(driver.segments))
    assert final["rungs"][-1]["reached"] >= 3  # references and promoted trials finished


@pytest.mark.parametrize(
    ("schedule", "training", "message"),
    [
        ({"kind": "asha", "min_epochs": 1, "eta": 1}, {"epochs": 9}, "greater than or equal to 2"),
        ({"kind": "asha", "min_epochs": 10, "eta": 3}, {"epochs": 9}, "[1, training.epochs]"),
        ({"kind": "hyperband"}, {"epochs": 9}, "'full', 'asha'"),
        ({"kind": "asha", "min_epochs": 0}, {"epochs": 9}, "greater than or equal to 1"),
    ],
)
def test_a_bad_schedule_is_refused_with_the_valid_range(
    client: TestClient, schedule: dict[str, Any], training: dict[str, Any], message: str
) -> None:
    body = search_body(schedule=schedule, training=training)
    response = client.post("/api/searches", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert message in response.text
    assert client.get("/api/searches", headers=VIEWER).json() == []  # nothing half-written


def test_a_zero_compute_budget_is_refused(client: TestClient) -> None:
    response = client.post("/api/searches", json=search_body(max_train_epochs=0), headers=ADMIN)
    assert response.status_code == 422 and "max_train_epochs" in response.text
