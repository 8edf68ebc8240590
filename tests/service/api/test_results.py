"""Results endpoints on SQLite and PostgreSQL: trials, pareto, analysis, formula, export.csv."""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi.testclient import TestClient

from tests.factories import (
    VIEWER,
    WORKER,
    create_search,
    lease_one,
    report_body,
    surrogate_top1,
    wait_for,
)


def _complete(client: TestClient, n: int, top1: Any = None) -> list[dict[str, Any]]:
    done = []
    for _ in range(n):
        lease = lease_one(client)
        value = surrogate_top1(lease["effective_factors"]) if top1 is None else top1(lease)
        body = report_body(lease, top1=value)
        response = client.post(f"/api/trials/{lease['id']}/complete", json=body, headers=WORKER)
        assert response.status_code == 200, response.text
        done.append({**lease, "top1": value})
    return done


def test_pareto_holds_exactly_the_non_dominated_trials(client: TestClient) -> None:
    search = create_search(client, parallelism=4, max_trials=8)
    done = _complete(client, 8)
    front = client.get(f"/api/searches/{search['id']}/pareto", headers=VIEWER).json()
    ids = {t["id"] for t in front}
    for trial in done:
        dominated = any(
            o["top1"] >= trial["top1"]
            and o["macs"] <= trial["macs"]
            and (o["top1"] > trial["top1"] or o["macs"] < trial["macs"])
            for o in done
        )
        assert (trial["id"] in ids) == (not dominated)
    assert [t["macs"] for t in front] == sorted(t["macs"] for t in front)


def test_analysis_formula_and_curve_follow_the_completed_trials(client: TestClient) -> None:
    search = create_search(client, parallelism=4, max_trials=12)
    base = f"/api/searches/{search['id']}"
    _complete(client, 2)
    early = client.get(f"{base}/analysis", params={"fresh": True}, headers=VIEWER).json()
    assert early["fitted"] is False and early["n"] == 2 and early["stale"] is False
    assert client.get(f"{base}/formula", headers=VIEWER).status_code == 409
    _complete(client, 8)
    # Served from the stored fit at once; the background analyst catches up with the new trials.
    answer = client.get(f"{base}/analysis", headers=VIEWER).json()
    assert answer["current_trials"] == 10 and answer["stale"] == (answer["n"] != 10)

    def caught_up() -> Any:
        body = client.get(f"{base}/analysis", headers=VIEWER).json()
        return body if body["n"] == 10 and not body["stale"] else None

    analysis = wait_for(caught_up, timeout_s=60)
    assert analysis["fitted"] is True and analysis["fitted_on"]["trials"] == 10
    assert set(analysis["one_d"]) == {"r", "d_i", "d_m", "w"}
    assert "reference_top1" in analysis and analysis["reference_top1"] is not None
    formula = client.get(f"{base}/formula", params={"c": 0.4}, headers=VIEWER).json()
    assert formula["c"] == 0.4 and set(formula["factors"]) == {"r", "d_i", "d_m", "w"}
    assert formula["macs"] > 0
    default_c = client.get(f"{base}/formula", headers=VIEWER).json()
    assert abs(default_c["c"] - search["c"]) < 1e-9
    curve = client.get(f"{base}/formula/curve", params={"points": 7}, headers=VIEWER).json()
    assert len(curve["c"]) == 7
    assert client.get(f"{base}/formula", params={"c": -1}, headers=VIEWER).status_code == 422


def test_export_csv_has_one_row_per_trial(client: TestClient) -> None:
    search = create_search(client, parallelism=3, max_trials=6)
    _complete(client, 2)
    # Two completed, so the planner tops the search up to 3 active again: 5 trials.
    wait_for(lambda: len(client.get(f"/api/searches/{search['id']}/trials", headers=VIEWER).json())
             == 5)  # fmt: skip
    response = client.get(f"/api/searches/{search['id']}/export.csv", headers=VIEWER)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    trials = client.get(f"/api/searches/{search['id']}/trials", headers=VIEWER).json()
    assert [int(r["id"]) for r in rows] == [t["id"] for t in trials]
    completed = [r for r in rows if r["state"] == "completed"]
    assert len(completed) == 2 and all(0 < float(r["top1"]) <= 1 for r in completed)
    assert {"r", "eff_w", "macs", "params", "kind"} <= set(rows[0])
