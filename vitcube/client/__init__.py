"""vitcube.client: a vitcube server from Python and from the terminal.

`Client` (client.api) is the REST API as typed methods; the `vitcube search …` commands
(client.cli) and `vitcube login` (client.profiles) are built on it, and so are the worker's
HTTP calls (`vitcube.workers.client`). A notebook user writes::

    from vitcube.client import Client
    with Client("http://127.0.0.1:8000", token) as client:
        search = client.create_search(body)
        client.pareto_frame(search.id)   # or client.pareto(search.id), a list

Imports httpx, pydantic and vitcube.contract; never torch, the server or the workers.
"""

from vitcube.client.api import (
    USER_RETRY_STATUS,
    WORKER_RETRY_STATUS,
    Abort,
    Backoff,
    Client,
    trials_frame,
)
from vitcube.client.errors import (
    ArtifactCorrupt,
    AuthError,
    ClientError,
    LeaseLost,
    NotFound,
    RequestRejected,
    ServerRefused,
    ServerUnavailable,
)

__all__ = [
    "USER_RETRY_STATUS",
    "WORKER_RETRY_STATUS",
    "Abort",
    "ArtifactCorrupt",
    "AuthError",
    "Backoff",
    "Client",
    "ClientError",
    "LeaseLost",
    "NotFound",
    "RequestRejected",
    "ServerRefused",
    "ServerUnavailable",
    "trials_frame",
]
