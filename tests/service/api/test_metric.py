"""A search's metric drives every ranking, on SQLite and PostgreSQL: a command trainer's
`val_loss` with `"goal": "minimize"` is reported through the worker protocol, and the best
trial, the Pareto front, the median rule, ASHA, the analysis and the formula, the CSV and the
pages all rank the lowest loss best and show it in loss units under its name."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from typing import Any

from fastapi.testclient import TestClient

from tests.factories import (
    VIEWER,
    VIEWER_TOKEN,
    WORKER,
    create_search,
    make_settings,
    wait_for,
)
from vitcube.contract import AshaSchedule, rung_epochs
from vitcube.search.asha import promotable
from vitcube.service.app import create_app

LOSS = {"name": "val_loss", "goal": "minimize"}
COMMAND = {"kind": "command", "name": "x"}
JSON = {"content-type": "application/json"}


def loss_search(client: TestClient, **overrides: Any) -> dict[str, Any]:
    return create_search(client, trainer=COMMAND, metric=LOSS, **overrides)


def lease(client: TestClient, worker: str = "box:0") -> dict[str, Any]:
    """A command worker's lease (it runs the trainer labelled x), waiting for the planner."""

    def attempt() -> dict[str, Any] | None:
        reply = client.post(
            "/api/trials/lease", json={"worker": worker, "trainers": ["command:x"]}, headers=WORKER
        )
        assert reply.status_code in (200, 204), reply.text
        return dict(reply.json()) if reply.status_code == 200 else None

    return dict(wait_for(attempt, timeout_s=30))


def loss_curve(end: int, loss: float) -> list[dict[str, Any]]:
    """A falling loss curve over epochs 1 … end that reaches `loss`; val_map rides along."""
    return [
        {"epoch": e, "val_loss": round(loss + 0.3 * (end - e), 6), "val_map": 0.1 * e}
        for e in range(1, end + 1)
    ]


def complete(client: TestClient, leased: dict[str, Any], loss: float) -> dict[str, Any]:
    body = {
        "lease_id": leased["lease_id"],
        "value": loss,
        "curve": loss_curve(leased["to_epoch"], loss),
    }
    reply = client.post(f"/api/trials/{leased['id']}/complete", json=body, headers=WORKER)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def get(client: TestClient, path: str, **params: Any) -> Any:
    reply = client.get(path, params=params, headers=VIEWER)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_the_lowest_loss_is_best_on_the_front_in_the_trials_and_the_csv(
    client: TestClient,
) -> None:
    search = loss_search(client, max_trials=6, parallelism=3)
    assert search["metric"] == LOSS
    losses = [1.2, 0.4, 0.9, 0.25, 1.6, 0.6]
    done = {}
    for loss in losses:
        leased = lease(client)
        complete(client, leased, loss)
        done[leased["id"]] = loss
    trials = wait_for(
        lambda: [t for t in get(client, f"/api/searches/{search['id']}/trials")
                 if t["state"] == "completed"] if len(done) == 6 else None
    )  # fmt: skip
    by_id = {t["id"]: t for t in trials}
    for trial_id, loss in done.items():
        trial = by_id[trial_id]
        assert trial["value"] == loss and trial["top1"] is None  # top-1 names val_top1 only
        assert trial["rung_values"] == {"3": loss} and trial["rung_top1"] == {}
        assert trial["curve"] == [
            {"epoch": p["epoch"], "val_loss": p["val_loss"], "val_top5": None,
             "train_loss": None, "val_map": p["val_map"]}
            for p in loss_curve(3, loss)
        ]  # fmt: skip
    # The best is the lowest loss within the budget (every trial here is within it).
    best = get(client, f"/api/searches/{search['id']}")["best"]
    assert (best["id"], best["value"]) == (min(done, key=lambda i: done[i]), 0.25)
    # The front: no other trial has a lower loss for no more MACs.
    front = {t["id"] for t in get(client, f"/api/searches/{search['id']}/pareto")}
    expected = {
        t["id"]
        for t in trials
        if not any(
            o["value"] <= t["value"] and o["macs"] <= t["macs"]
            and (o["value"], o["macs"]) != (t["value"], t["macs"])
            for o in trials
        )
    }  # fmt: skip
    assert front == expected and best["id"] in front
    # The compact view the page draws from carries the value; its top1 is empty.
    compact = get(client, f"/api/searches/{search['id']}/trials/compact")
    rows = [dict(zip(compact["columns"], row, strict=True)) for row in compact["rows"]]
    assert {r["id"]: r["value"] for r in rows if r["state"] == "completed"} == done
    assert all(r["top1"] is None for r in rows)
    # The CSV heads the value's column with the metric's name.
    reply = client.get(f"/api/searches/{search['id']}/export.csv", headers=VIEWER)
    table = list(csv.DictReader(io.StringIO(reply.text)))
    assert "val_loss" in table[0] and "top1" not in table[0]
    assert {int(r["id"]): float(r["val_loss"]) for r in table if r["val_loss"]} == done


def test_a_report_without_the_metric_or_with_nan_is_422_naming_it(client: TestClient) -> None:
    loss_search(client)
    leased = lease(client)
    url = f"/api/trials/{leased['id']}/complete"
    base = {"lease_id": leased["lease_id"]}
    for body, named in [
        ({**base, "top1": 0.8}, "val_loss"),  # top1 is val_top1's, not this search's metric
        ({**base}, "val_loss"),
        ({**base, "value": 0.5, "curve": [{"epoch": 1, "val_map": 0.3}]}, "val_loss"),
        ({**base, "value": 0.5, "curve": [{"epoch": 1, "val_loss": math.nan}]}, "val_loss"),
        ({**base, "value": math.nan}, "value"),
    ]:
        # As a script's JSON encoder writes NaN (httpx refuses to).
        raw = json.dumps(body).encode()
        reply = client.post(url, content=raw, headers={**WORKER, **JSON})
        assert reply.status_code == 422, body
        assert named in reply.text, reply.text
    beat = {"lease_id": leased["lease_id"], "epoch": 1, "metrics": {"val_loss": math.inf}}
    refused = client.post(
        f"/api/trials/{leased['id']}/heartbeat",
        content=json.dumps(beat).encode(),
        headers={**WORKER, **JSON},
    )
    assert refused.status_code == 422
    trial = get(client, f"/api/trials/{leased['id']}")
    assert trial["state"] == "running" and trial["curve"] == []
    # Nothing was written: the same lease completes once the report carries the metric.
    assert complete(client, leased, 0.5)["state"] == "completed"


def test_the_median_rule_stops_a_trial_whose_loss_is_above_the_median(database_url: str) -> None:
    settings = make_settings(database_url, median_stop_min_trials=2, median_stop_warmup_epochs=1)
    with TestClient(create_app(settings)) as client:
        loss_search(client, parallelism=2, max_trials=6)
        for loss in (0.3, 0.3, 0.3):  # two references and a search trial: 0.9, 0.6, 0.3
            complete(client, lease(client), loss)
        first, second = lease(client), lease(client)
        assert first["kind"] == second["kind"] == "search"

        def beat(leased: dict[str, Any], epoch: int, loss: float) -> dict[str, Any]:
            body = {"lease_id": leased["lease_id"], "epoch": epoch, "metrics": {"val_loss": loss}}
            url = f"/api/trials/{leased['id']}/heartbeat"
            return dict(client.post(url, json=body, headers=WORKER).json())

        assert beat(first, 1, 0.2)["action"] == "continue"  # below the median 0.9 at epoch 1
        assert beat(first, 2, 5.0)["action"] == "continue"  # its best so far (0.2) stays good
        hopeless = beat(second, 1, 1.5)
        assert hopeless["action"] == "stop"
        assert "best val_loss 1.5000 by epoch 1 is above the median 0.9000" in hopeless["reason"]
        assert get(client, f"/api/trials/{second['id']}")["state"] == "stopped"


def test_asha_promotes_the_lowest_losses(client: TestClient) -> None:
    epochs = 4
    schedule = {"kind": "asha", "min_epochs": 1, "eta": 2}
    rungs = rung_epochs(AshaSchedule(**schedule), epochs)  # (1, 2, 4)
    search = loss_search(
        client,
        max_trials=8,
        parallelism=1,
        training={"epochs": epochs, "batch_size": 16},
        schedule=schedule,
    )
    losses: dict[int, dict[int, float]] = {epoch: {} for epoch in rungs}
    paused: dict[int, int] = {}
    promoted = 0
    while get(client, f"/api/searches/{search['id']}")["state"] == "running":
        reply = client.post(
            "/api/trials/lease", json={"worker": "w", "trainers": ["command:x"]}, headers=WORKER
        )
        if reply.status_code == 204:
            time.sleep(0.02)  # the planner is still queueing the next segment
            continue
        leased = reply.json()
        if leased["id"] in paused:
            at = paused.pop(leased["id"])
            scores = {trial: -loss for trial, loss in losses[at].items()}
            waiting = [t for t, rung in paused.items() if rung == at] + [leased["id"]]
            assert leased["id"] in promotable(scores, waiting, 2)
            # A minimising ranking: the promoted trial beats at least half of its rung.
            loss = losses[at][leased["id"]]
            assert sum(other >= loss for other in losses[at].values()) >= len(losses[at]) / 2
            promoted += 1
        # Deterministic losses whose order differs from the trial ids'.
        loss = round(2.0 - 0.1 * leased["to_epoch"] + 0.37 * ((leased["id"] * 7) % 5), 6)
        state = complete(client, leased, loss)["state"]
        if leased["kind"] == "search":
            losses[leased["to_epoch"]][leased["id"]] = loss
        if state == "paused":
            paused[leased["id"]] = leased["to_epoch"]
    assert promoted >= 2
    rung_view = get(client, f"/api/searches/{search['id']}")["rungs"]
    assert rung_view[0]["best_value"] == min(losses[rungs[0]].values())
    assert rung_view[0]["best_top1"] is None


def test_the_analysis_and_the_formula_are_in_loss_units(client: TestClient) -> None:
    search = loss_search(client, max_trials=8, parallelism=4)
    losses = {}
    for i in range(8):
        leased = lease(client)
        losses[leased["id"]] = 0.2 + 0.15 * i
        complete(client, leased, losses[leased["id"]])
    analysis = get(client, f"/api/searches/{search['id']}/analysis", fresh=True)
    assert analysis["fitted"] and analysis["metric"] == LOSS
    shown = {round(o["value"], 6) for v in analysis["one_d"].values() for o in v["observations"]}
    assert shown <= {round(loss, 6) for loss in losses.values()} and shown
    for view in analysis["one_d"].values():
        # Means near the losses (positive), never their negations; the band in order.
        assert all(0.0 < m < 2.5 for m in view["mean"])
        assert all(lo <= hi for lo, hi in zip(view["lower"], view["upper"], strict=True))
        assert all(o["top1"] is None for o in view["observations"])
    assert all(0.0 < m < 2.5 for row in analysis["two_d"]["r-w"]["mean"] for m in row)
    references = [losses[t["id"]] for t in get(client, f"/api/searches/{search['id']}/trials")
                  if t["kind"].startswith("reference:")]  # fmt: skip
    assert analysis["reference_value"] == min(references) and analysis["reference_top1"] is None
    curve = get(client, f"/api/searches/{search['id']}/formula/curve", fresh=True, points=5)
    assert curve["points"]
    assert {round(p["value"], 6) for p in curve["points"]} <= {
        round(loss, 6) for loss in losses.values()
    }
    # The paper's selection keeps the best trials: the lowest losses.
    assert min(losses.values()) in {round(p["value"], 6) for p in curve["points"]}


def test_the_pages_name_the_metric(client: TestClient) -> None:
    search = loss_search(client, max_trials=3, parallelism=3, name="loss search")
    complete(client, lease(client), 0.4321)
    wait_for(lambda: get(client, f"/api/searches/{search['id']}")["best"])
    reply = client.post("/login", data={"token": VIEWER_TOKEN, "next": "/"}, follow_redirects=False)
    assert reply.status_code == 303
    page = client.get(f"/searches/{search['id']}").text
    assert "coloured by val_loss" in page and "a GP of val_loss" in page
    assert "nothing is both lower val_loss and cheaper" in page and "top-1" not in page
    listing = client.get("/").text
    assert "0.4321 val_loss" in listing and "Best val_loss" in listing
