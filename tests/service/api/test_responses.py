"""The error bodies the API returns are the ones its OpenAPI document declares, on SQLite and
PostgreSQL: each refusal is checked against the model the document names for its status.

tests/service/test_openapi_contract.py fuzzes the same promise with schemathesis; this is the
quick, readable half that names each kind of refusal.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from tests.factories import ADMIN, VIEWER, create_search, search_body
from vitcube.service.api.responses import ErrorPublic, ValidationErrorPublic

MODELS: dict[str, type[BaseModel]] = {
    "ErrorPublic": ErrorPublic,
    "ValidationErrorPublic": ValidationErrorPublic,
}


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/openapi.json").json())


def _declared(openapi: dict[str, Any], method: str, path: str, status: int) -> str:
    """The component the document names for `status` of `method path` (or for `default`)."""
    responses = openapi["paths"][path][method]["responses"]
    response = responses.get(str(status), responses.get("default"))
    assert response is not None, f"{method} {path} does not declare {status}"
    return str(response["content"]["application/json"]["schema"]["$ref"]).rsplit("/", 1)[-1]


def _assert_declared(
    openapi: dict[str, Any], method: str, path: str, answer: Any, status: int
) -> BaseModel:
    assert answer.status_code == status, answer.text
    model = MODELS[_declared(openapi, method, path, status)]
    return model.model_validate(answer.json(), strict=True)


def test_every_operation_declares_its_errors(openapi: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            codes = set(operation["responses"])
            assert _declared(openapi, method, path, 599) == "ErrorPublic", where  # default
            validates = bool(operation.get("parameters") or operation.get("requestBody"))
            assert ("422" in codes) == validates, where
            if validates:
                assert _declared(openapi, method, path, 422) == "ValidationErrorPublic", where
            assert ("404" in codes) == ("{" in path), where
            assert ({"401", "403"} <= codes) == (path != "/api/health"), where


def test_refusals_have_the_declared_shapes(client: TestClient, openapi: dict[str, Any]) -> None:
    searches = "/api/searches"
    nobody = client.get(searches)
    assert _assert_declared(openapi, "get", searches, nobody, 401) == ErrorPublic(
        detail="missing token: send `Authorization: Bearer <token>`"
    )
    viewer = client.post(searches, json=search_body(), headers=VIEWER)
    _assert_declared(openapi, "post", searches, viewer, 403)

    # Validation: the list of what failed. A JSON boolean is not a number.
    typed = client.post(searches, json=search_body(budget={"c": True}), headers=ADMIN)
    invalid = _assert_declared(openapi, "post", searches, typed, 422)
    assert isinstance(invalid, ValidationErrorPublic) and isinstance(invalid.detail, list)
    assert [issue.loc for issue in invalid.detail] == [["body", "budget", "c"]]
    # Well-formed but impossible: one sentence, under the same status.
    unknown = client.post(searches, json=search_body(base={"preset": "nope"}), headers=ADMIN)
    impossible = _assert_declared(openapi, "post", searches, unknown, 422)
    assert isinstance(impossible, ValidationErrorPublic) and isinstance(impossible.detail, str)
    assert impossible.detail.startswith("base:")

    huge = client.post(searches, json=search_body(name="x" * 2_000_000), headers=ADMIN)
    _assert_declared(openapi, "post", searches, huge, 413)

    one = "/api/searches/{search_id}"
    missing = client.get("/api/searches/999999", headers=VIEWER)
    _assert_declared(openapi, "get", one, missing, 404)

    search = create_search(client)  # running: resuming it is a conflict
    resume = "/api/searches/{search_id}/resume"
    running = client.post(f"/api/searches/{search['id']}/resume", headers=ADMIN)
    assert (
        "only a paused or failed search"
        in _assert_declared(openapi, "post", resume, running, 409).model_dump()["detail"]
    )
