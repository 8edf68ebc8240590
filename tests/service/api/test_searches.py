"""POST/GET /api/searches and stop, on SQLite and PostgreSQL: validation, planning, counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from tests.factories import (
    ADMIN,
    BAD_TRAINING_BLOCKS,
    BASE,
    GOOD_TRAINING_BLOCKS,
    VIEWER,
    WORKER,
    command_trainer,
    create_search,
    heartbeat_body,
    lease_one,
    search_body,
    wait_for,
)
from vitcube.service import store
from vitcube.service.db import Database
from vitcube.service.tables import Worker
from vitcube.workers.recipe import TrainingConfig


def test_create_returns_the_search_with_budget_resolved(client: TestClient) -> None:
    search = create_search(client, budget={"c": 0.5}, extra_note="kept")
    assert search["state"] == "running"
    assert search["max_macs"] == int(0.5 * search["m0"])
    assert search["c"] == pytest.approx(0.5, rel=1e-6)
    assert search["base"]["num_classes"] == 10  # from the dataset
    assert search["space"]["r"] == [0.8, 1.7]
    assert search["counts"] == {
        "queued": 0,
        "running": 0,
        "paused": 0,
        "completed": 0,
        "failed": 0,
        "stopped": 0,
    }
    assert search["extra"] == {"extra_note": "kept"}
    assert client.get(f"/api/searches/{search['id']}", headers=VIEWER).json()["id"] == search["id"]
    assert [s["id"] for s in client.get("/api/searches", headers=VIEWER).json()] == [search["id"]]


def test_planner_queues_reference_trials_first_up_to_parallelism(client: TestClient) -> None:
    search = create_search(client, parallelism=3, max_trials=6)

    def three_queued() -> list[dict[str, Any]]:
        trials = client.get(f"/api/searches/{search['id']}/trials", headers=VIEWER).json()
        return trials if len(trials) >= 3 else []

    trials = wait_for(three_queued)
    assert len(trials) == 3  # parallelism caps queued + running
    # m0 is over a half budget, so no baseline reference: width-only, compound, then the strategy.
    assert [t["kind"] for t in trials] == ["reference:width_only", "reference:compound", "search"]
    for trial in trials:
        assert trial["macs"] <= search["max_macs"]
        assert set(trial["factors"]) == set(trial["effective_factors"]) == {"r", "d_i", "d_m", "w"}
        assert trial["arch"]["resolution"] == trial["resolution"]
    # Distinct networks only.
    assert len({str(sorted(t["effective_factors"].items())) for t in trials}) == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"space": {"r": [1.5, 1.0]}}, "space.r"),
        ({"base": {"family": "resnet", "size": "xxs"}}, "base"),
        ({"budget": {"c": 0}}, "budget"),
        ({"budget": {"c": -1}}, "budget"),
        ({"budget": {"c": 0.5, "max_macs": 10}}, "exactly one"),
        ({"budget": {"max_macs": 1000}}, "smallest"),
        ({"dataset": {"name": "imagefolder"}}, "num_classes"),
        ({"dataset": {"name": "cifar10", "num_classes": 100}}, "10 classes"),
        ({"dataset": {"name": "imagefolder", "num_classes": 200, "layout": "tiny"}}, "layout"),
        ({"dataset": {"name": "cifar10", "layout": "folders"}}, "imagefolder only"),
        ({"max_trials": 0}, "max_trials"),
        ({"strategy": "grid"}, "strategy"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_searches_get_422_naming_the_problem_and_write_nothing(
    client: TestClient, change: dict[str, Any], message: str
) -> None:
    response = client.post("/api/searches", json=search_body(**change), headers=ADMIN)
    assert response.status_code == 422, response.text
    assert message in response.text
    assert client.get("/api/searches", headers=VIEWER).json() == []


def test_an_imagefolder_layout_reaches_the_workers_dataset_block(client: TestClient) -> None:
    dataset = {"name": "imagefolder", "num_classes": 200, "layout": "tinyimagenet"}
    search = create_search(client, dataset=dataset)
    assert search["dataset"] == dataset  # the worker's load_dataset reads the same block


@pytest.mark.parametrize(("block", "message"), BAD_TRAINING_BLOCKS)
def test_a_recipe_a_worker_would_refuse_is_422_naming_the_key_and_writes_nothing(
    client: TestClient, block: Any, message: str
) -> None:
    response = client.post("/api/searches", json=search_body(training=block), headers=ADMIN)
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert any(message in problem["msg"] for problem in problems), problems
    assert all(problem["loc"][:2] == ["body", "training"] for problem in problems), problems
    assert client.get("/api/searches", headers=VIEWER).json() == []


def test_the_server_accepts_exactly_the_recipes_a_worker_accepts(client: TestClient) -> None:
    stored: dict[int, dict[str, Any]] = {}
    for block in [*GOOD_TRAINING_BLOCKS, *(bad for bad, _ in BAD_TRAINING_BLOCKS)]:
        response = client.post(
            "/api/searches",
            json=search_body(training=block, max_trials=1, parallelism=1),
            headers=ADMIN,
        )
        assert response.status_code in (201, 422), response.text
        try:
            worker: TrainingConfig | None = TrainingConfig.from_dict(block)
        except ValueError:
            worker = None
        assert (response.status_code == 201) == (worker is not None), (block, response.text)
        if worker is not None:
            # Stored (and leased out) is the whole validated recipe, the family's and dataset's
            # defaults filled in: what the worker resolves for the same family and dataset.
            search = response.json()
            resolved = worker.resolved(family=BASE["family"], size=BASE["size"], dataset="digits")
            assert search["training"] == resolved.model_dump(mode="json")
            stored[search["id"]] = search["training"]
    assert len(stored) == len(GOOD_TRAINING_BLOCKS)
    lease = lease_one(client)
    assert lease["training"] == stored[lease["search_id"]]
    assert TrainingConfig.from_dict(lease["training"]).model_dump(mode="json") == lease["training"]


def test_the_stored_recipe_is_the_familys_published_one_with_explicit_keys_kept(
    client: TestClient,
) -> None:
    v1 = create_search(client, training={"epochs": 3, "batch_size": 256, "weight_decay": 0.02})
    v2 = create_search(
        client,
        base={"family": "mobilevit_v2", "width": 0.5, "resolution": 64},
        dataset={"name": "cifar10"},
        training={"epochs": 3, "batch_size": 256},
    )
    for search in (v1, v2):  # 0.002 at batch 1024, sqrt rule
        assert search["training"]["lr"] == pytest.approx(0.001)
        stored = client.get(f"/api/searches/{search['id']}", headers=VIEWER).json()
        assert stored["training"] == search["training"]
    one, two = v1["training"], v2["training"]
    assert (one["weight_decay"], one["decay_norms_and_biases"]) == (0.02, True)  # explicit wins
    assert (one["multiscale"], one["transformer_dropout"], one["rand_augment"]) == (
        True,
        0.05,
        False,
    )
    assert (two["weight_decay"], two["decay_norms_and_biases"], two["multiscale"]) == (
        0.05,
        False,
        False,
    )
    assert (two["rand_augment"], two["mixup_alpha"], two["cutmix_alpha"]) == (True, 0.2, 1.0)
    assert (two["crop_interpolation"], two["random_erase_p"]) == ("bicubic", 0.25)


def test_a_recipe_that_contradicts_the_familys_scaled_lr_is_422_and_writes_nothing(
    client: TestClient,
) -> None:
    body = search_body(training={"batch_size": 16, "min_lr": 0.001})
    response = client.post("/api/searches", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert "training.min_lr must be in [0, lr] = [0, 0.00025], got 0.001" in response.text
    assert "sqrt(batch_size / 1024)" in response.text
    assert client.get("/api/searches", headers=VIEWER).json() == []


def test_an_unmeetable_budget_names_the_smallest_reachable_macs(client: TestClient) -> None:
    response = client.post(
        "/api/searches", json=search_body(budget={"max_macs": 1000}), headers=ADMIN
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "smallest reachable" in detail and "MACs" in detail


def test_malformed_and_oversized_bodies_are_refused(client: TestClient) -> None:
    malformed = client.post(
        "/api/searches",
        content=b'{"name": ',
        headers={**ADMIN, "content-type": "application/json"},
    )
    assert malformed.status_code == 422
    huge = search_body(name="x", extra_blob="y" * 2_000_000)
    assert client.post("/api/searches", json=huge, headers=ADMIN).status_code == 413
    assert client.get("/api/searches", headers=VIEWER).json() == []


# -- trainers ---------------------------------------------------------------------------------


def test_a_command_search_keeps_its_dataset_block_untouched_and_names_trainer_and_metric(
    client: TestClient,
) -> None:
    fields = command_trainer("det-v2", metric="val_loss")
    fields["metric"]["goal"] = "minimize"
    plan = client.post("/api/searches/validate", json=search_body(**fields), headers=VIEWER)
    assert plan.status_code == 200, plan.text
    search = create_search(client, **fields)
    for made in (plan.json(), search):
        assert made["dataset"] == fields["dataset"]  # any name, extra keys, no num_classes
        assert made["trainer"] == {"kind": "command", "name": "det-v2"}
        assert made["metric"] == {"name": "val_loss", "goal": "minimize"}
    stored = client.get(f"/api/searches/{search['id']}", headers=VIEWER).json()
    assert (stored["dataset"], stored["trainer"], stored["metric"]) == (
        fields["dataset"],
        fields["trainer"],
        fields["metric"],
    )
    # A builtin search says so too, with the default metric.
    builtin = create_search(client)
    assert builtin["trainer"] == {"kind": "builtin", "name": None}
    assert builtin["metric"] == {"name": "val_top1", "goal": "maximize"}


def test_a_command_search_may_name_its_classes_and_they_reach_the_network(
    client: TestClient,
) -> None:
    fields = command_trainer()
    fields["dataset"] = {**fields["dataset"], "num_classes": 80}
    search = create_search(client, **fields)
    assert search["dataset"]["num_classes"] == 80 and search["base"]["num_classes"] == 80


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trainer": {"kind": "command"}}, 'a command trainer needs its name: {"kind": "command"'),
        (
            {"trainer": {"kind": "command", "name": "det v2!"}},
            "trainer.name must be a label of letters, digits",
        ),
        (
            {"trainer": {"kind": "command", "nmae": "det-v2"}},
            "trainer.nmae is not a trainer key (did you mean name?)",
        ),
        (
            {**command_trainer(), "metric": {"name": "val_map", "gaol": "minimize"}},
            "metric.gaol is not a metric key (did you mean goal?)",
        ),
        (
            {"metric": {"name": "val_map"}},
            "it reports val_top1 (and val_top5, train_loss), so a builtin search optimises "
            "val_top1",
        ),
        ({"trainer": {"kind": "builtin", "name": "x"}}, "trainer.name is only for"),
        # A builtin search keeps the builtin datasets' validation, whatever a command may take.
        ({"dataset": {"name": "coco-mini"}}, "imagefolder"),
        ({"dataset": {"name": "imagefolder"}}, "num_classes"),
    ],
)
def test_bad_trainer_blocks_get_422_saying_what_to_change_on_create_and_dry_run(
    client: TestClient, change: dict[str, Any], message: str
) -> None:
    for path in ("/api/searches/validate", "/api/searches"):
        response = client.post(path, json=search_body(**change), headers=ADMIN)
        assert response.status_code == 422, response.text
        problems = response.json()["detail"]
        assert any(message in problem["msg"] for problem in problems), problems
    assert client.get("/api/searches", headers=VIEWER).json() == []


def _search(client: TestClient, search_id: int) -> dict[str, Any]:
    return dict(client.get(f"/api/searches/{search_id}", headers=VIEWER).json())


def test_a_search_no_connected_worker_can_run_says_so_until_one_asks_for_a_lease(
    client: TestClient, database_url: str
) -> None:
    search = create_search(client, **command_trainer("det-v2"))
    waiting = wait_for(lambda: (s := _search(client, search["id"]))["counts"]["queued"] and s)
    assert waiting["state"] == "running" and waiting["trainer_workers"] == 0
    assert waiting["notice"].startswith("no connected worker can run trainer command:det-v2: ")
    assert "vitcube worker --command det-v2='…'" in waiting["notice"]
    # A worker that cannot run it changes nothing ...
    lease_one_or_none(client, "classic-box", None)
    assert _search(client, search["id"])["notice"] == waiting["notice"]
    # ... one that can, asking (even before it gets anything), clears it.
    lease = lease_one_or_none(client, "det-box", ["builtin", "command:det-v2"])
    assert lease is not None and lease["search_id"] == search["id"]
    ready = _search(client, search["id"])
    assert (ready["notice"], ready["trainer_workers"]) == (None, 1)
    # A worker unseen for longer than the window is not connected any more.
    database = Database(database_url)
    try:
        with database.session(write=True) as session:
            session.execute(
                update(Worker).values(
                    last_seen_at=datetime.now(UTC)
                    - timedelta(seconds=store.WORKER_SEEN_WINDOW_S + 60)
                )
            )
    finally:
        database.dispose()
    stale = _search(client, search["id"])
    assert stale["trainer_workers"] == 0
    assert stale["notice"] == waiting["notice"]


def lease_one_or_none(client: TestClient, worker: str, trainers: list[str] | None) -> Any:
    body: dict[str, Any] = {"worker": worker}
    if trainers is not None:
        body["trainers"] = trainers
    response = client.post("/api/trials/lease", json=body, headers=WORKER)
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else None


def test_unknown_search_is_404(client: TestClient) -> None:
    response = client.get("/api/searches/424242", headers=VIEWER)
    assert response.status_code == 404
    assert "424242" in response.json()["detail"]


def test_stop_stops_queued_trials_and_tells_running_ones(client: TestClient) -> None:
    search = create_search(client, parallelism=3, max_trials=10)
    lease = lease_one(client)
    wait_for(
        lambda: (
            client.get(f"/api/searches/{search['id']}", headers=VIEWER).json()["counts"]["queued"]
            == 2
        )
    )
    stopped = client.post(f"/api/searches/{search['id']}/stop", headers=ADMIN)
    assert stopped.status_code == 200
    assert stopped.json()["state"] == "stopped"
    assert stopped.json()["counts"] == {
        "queued": 0,
        "running": 1,
        "paused": 0,
        "completed": 0,
        "failed": 0,
        "stopped": 2,
    }
    reply = client.post(
        f"/api/trials/{lease['id']}/heartbeat", json=heartbeat_body(lease, 0), headers=WORKER
    )
    assert reply.json()["action"] == "stop"
    # Stopping twice is harmless; nothing more is queued.
    assert client.post(f"/api/searches/{search['id']}/stop", headers=ADMIN).status_code == 200
    assert client.post("/api/trials/lease", json={"worker": "w"}, headers=WORKER).status_code == 204
    after = client.get(f"/api/searches/{search['id']}", headers=VIEWER).json()
    assert after["counts"]["stopped"] == 3 and after["counts"]["queued"] == 0


def test_the_dry_run_warns_when_asha_has_too_few_trials_to_train_any_to_the_end(
    client: TestClient,
) -> None:
    # 15 epochs and no schedule: ASHA, rungs 1, 3, 9, 15 and 2 brackets, so a configuration
    # needs 2 promotions (9 configurations at its start rung) to train all 15 epochs.
    def plan(**overrides: Any) -> dict[str, Any]:
        body = search_body(training={"epochs": 15, "batch_size": 16}, **overrides)
        reply = client.post("/api/searches/validate", json=body, headers=VIEWER)
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    few = plan(max_trials=10)
    assert few["schedule"]["kind"] == "asha"
    references = len(few["references"])
    (warning,) = few["warnings"]
    assert f"raise max_trials to at least {9 + references}" in warning
    assert f"leaves {10 - references} after the {references} reference" in warning
    assert plan(max_trials=9 + references)["warnings"] == []
    assert plan(max_trials=10, schedule={"kind": "full"})["warnings"] == []
    assert client.get("/api/searches", headers=VIEWER).json() == []  # a warning refuses nothing
