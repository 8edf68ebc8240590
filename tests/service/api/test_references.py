"""Named reference networks (`references` in the create body): validated as presets, queued as
`reference:named` trials at their own resolution, never fitted on, counted as references."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.factories import (
    ADMIN,
    VIEWER,
    WORKER,
    create_search,
    report_body,
    search_body,
    wait_for,
)
from vitcube.models import ArchConfig, count_macs

REFERENCES = ["mobilenet_v2", {"name": "mobilenet_v3_small", "resolution": 64}]


def _trials(client: TestClient, search_id: int) -> list[dict[str, Any]]:
    return list(client.get(f"/api/searches/{search_id}/trials", headers=VIEWER).json())


def test_named_references_are_queued_at_their_own_resolution(client: TestClient) -> None:
    search = create_search(client, references=REFERENCES, max_trials=8, parallelism=8)
    assert search["references"] == [
        {"name": "mobilenet_v2", "resolution": 224},
        {"name": "mobilenet_v3_small", "resolution": 64},
    ]

    def named() -> list[dict[str, Any]]:
        found = [t for t in _trials(client, search["id"]) if t["kind"] == "reference:named"]
        return found if len(found) == 2 else []

    trials = {t["reference"]: t for t in wait_for(named)}
    for name, resolution in (("mobilenet_v2", 224), ("mobilenet_v3_small", 64)):
        trial = trials[name]
        expected = ArchConfig.preset(name, num_classes=10, resolution=resolution).scale()
        assert trial["resolution"] == resolution and trial["arch"]["base"]["family"] == name
        assert trial["arch"]["num_classes"] == 10  # the dataset's classes, not ImageNet's
        assert trial["macs"] == count_macs(expected)
        assert trial["effective_factors"] == {"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": 1.0}
    compact = client.get(f"/api/searches/{search['id']}/trials/compact", headers=VIEWER).json()
    column = compact["columns"].index("reference")
    assert {row[column] for row in compact["rows"]} >= {"mobilenet_v2", "mobilenet_v3_small"}


def test_the_dry_run_lists_named_references_with_their_macs(client: TestClient) -> None:
    reply = client.post(
        "/api/searches/validate", json=search_body(references=REFERENCES), headers=VIEWER
    )
    assert reply.status_code == 200, reply.text
    named = [r for r in reply.json()["references"] if r["kind"] == "reference:named"]
    small = ArchConfig.preset("mobilenet_v3_small", num_classes=10, resolution=64).scale()
    assert [r["name"] for r in named] == ["mobilenet_v2", "mobilenet_v3_small"]
    assert named[1]["resolution"] == 64 and named[1]["macs"] == count_macs(small)


def test_a_bad_reference_is_refused_naming_what_to_change(client: TestClient) -> None:
    cases = [
        (["efficientvit_m99"], "no preset 'efficientvit_m99'"),
        (["mobilenet_v2", "mobilenet_v2"], "named twice"),
        ([{"name": "mobilenet_v2", "resolution": 20}], "references[0] (mobilenet_v2)"),
        ([{"name": "mobilenet_v2", "size": 3}], "size"),
        (["mobilenet"] * 9, "at most 8"),
    ]
    for references, message in cases:
        for path in ("/api/searches/validate", "/api/searches"):
            reply = client.post(path, json=search_body(references=references), headers=ADMIN)
            assert reply.status_code == 422, (references, reply.text)
            assert message in reply.text, (references, reply.text)
    assert client.get("/api/searches", headers=VIEWER).json() == []  # nothing half-written


def test_a_named_reference_is_a_yardstick_not_a_point_of_the_cube(client: TestClient) -> None:
    search = create_search(
        client, references=["mobilenet_v3_small"], strategy="sobol", max_trials=9, parallelism=9
    )
    base = f"/api/searches/{search['id']}"
    wait_for(lambda: len(_trials(client, search["id"])) == 9)
    for trial in _trials(client, search["id"]):
        lease = client.post("/api/trials/lease", json={"worker": "w"}, headers=WORKER).json()
        # The named reference is best by far; the cube's trials are all worse.
        top1 = 0.99 if lease["kind"] == "reference:named" else 0.5 + 0.01 * trial["id"]
        body = report_body(lease, top1=top1)
        assert client.post(f"/api/trials/{lease['id']}/complete", json=body, headers=WORKER)
    analysis = client.get(f"{base}/analysis", params={"fresh": True}, headers=VIEWER).json()
    assert analysis["fitted_on"]["trials"] == 8  # nine completed, the named one left out
    # Under the budget (56 M MACs of 204 M) it is a reference the search must beat: the GP
    # plots draw its line.
    named = next(t for t in _trials(client, search["id"]) if t["kind"] == "reference:named")
    assert named["macs"] <= search["max_macs"] and analysis["reference_top1"] == 0.99
