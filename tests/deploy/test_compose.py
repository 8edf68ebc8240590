"""docker-compose.yml and the Dockerfile agree with the CLI and the settings.

No Docker engine runs on CI machines, so the files are checked by parsing: every service's
command must parse with the real `vitcube` click command, and every VITCUBE_ variable must be a
setting the server or the worker actually reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from vitcube.cli import app
from vitcube.service.settings import Settings
from vitcube.workers.host import loader_shm_bytes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _parse(argv: list[str]) -> Any:
    """Parse argv (without the program name) with the real CLI, as the container would.

    Returns the click context (typer vendors its own click, so it is typed loosely here).
    """
    group: Any = typer.main.get_command(app)
    name, *rest = argv
    command = group.commands[name]
    return command.make_context(name, list(rest), resilient_parsing=False)


def test_compose_has_the_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "minio", "minio-bucket", "server", "worker"}
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pgdata:/var/lib/postgresql/data" in postgres["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "pgdata" in compose["volumes"]


def test_server_command_parses_and_uses_postgres(compose: dict[str, Any]) -> None:
    server = compose["services"]["server"]
    assert server["command"][0] == "vitcube"
    ctx = _parse(server["command"][1:])
    assert ctx.params["host"] == "0.0.0.0"
    assert ctx.params["port"] == 8000
    # a non-loopback bind needs an admin token: compose must provide one
    assert "VITCUBE_ADMIN_TOKEN" in server["environment"]
    assert server["environment"]["VITCUBE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_worker_command_parses_with_all_gpus_and_read_only_data(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = compose["services"]["worker"]
    monkeypatch.setenv("VITCUBE_WORKER_TOKEN", "from-env")
    assert worker["command"][0] == "vitcube"
    ctx = _parse(worker["command"][1:])
    assert ctx.params["server"] == "http://server:8000"
    assert ctx.params["gpus"] == "all"
    assert str(ctx.params["data_root"]) == "/data"
    assert any(v.endswith(":/data:ro") for v in worker["volumes"])
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def _bytes(size: str | int) -> int:
    """A compose size ("16gb", "512m", 1073741824) in bytes."""
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", str(size).strip().lower())
    assert match, f"not a compose size: {size!r}"
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " ")


def test_worker_has_shared_memory_for_its_dataloader_workers(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    # Docker's default /dev/shm is 64 MB; one GPU's default loader (4 workers x 2 batches of
    # 64 x 3 x 293² uint8 in flight) needs ~132 MB, so eight GPUs need ~1 GB at the very least.
    need = 8 * loader_shm_bytes(num_workers=4, batch_size=64, load_size=293)
    assert worker.get("ipc") == "host" or _bytes(worker["shm_size"]) >= need
    assert _bytes("16gb") == 16 << 30 and _bytes("64m") == 64 << 20 and _bytes(1024) == 1024


def test_worker_token_comes_from_the_environment(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = compose["services"]["worker"]
    assert "VITCUBE_WORKER_TOKEN" in worker["environment"]
    monkeypatch.setenv("VITCUBE_WORKER_TOKEN", "from-env")
    ctx = _parse(worker["command"][1:])
    assert ctx.params["token"] == "from-env"


def test_every_vitcube_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    fields = {f"VITCUBE_{name.upper()}" for name in Settings.model_fields}
    fields.add("VITCUBE_DATA")  # compose's own: the host folder mounted at /data
    used: set[str] = set()
    for service in compose["services"].values():
        used.update(k for k in service.get("environment", {}) if k.startswith("VITCUBE_"))
    example = (ROOT / ".env.example").read_text()
    used.update(re.findall(r"^(VITCUBE_\w+)=", example, flags=re.MULTILINE))
    assert used, "compose sets no VITCUBE_ variable"
    assert used <= fields, f"unknown settings: {sorted(used - fields)}"


def test_server_keeps_artifacts_in_minio(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    minio = services["minio"]
    assert minio["image"].startswith("minio/minio") and minio["command"][0] == "server"
    assert any(v.endswith(":/data") for v in minio["volumes"]) and "minio" in compose["volumes"]
    # the bucket exists before the server starts
    assert "mc mb --ignore-existing store/vitcube" in " ".join(services["minio-bucket"]["command"])
    server = services["server"]
    assert server["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    env = server["environment"]
    assert env["VITCUBE_ARTIFACT_URL"] == "s3://vitcube/artifacts"
    # the options are the JSON the setting parses, pointing at the compose service
    # the options are the JSON the setting parses (compose substitutes the ${…} from .env)
    options = re.sub(r"\$\{(\w+)\}", r"from-\1", env["VITCUBE_ARTIFACT_OPTIONS"])
    monkeypatch.setenv("VITCUBE_ARTIFACT_OPTIONS", options)
    settings = Settings(artifact_url=env["VITCUBE_ARTIFACT_URL"])
    assert settings.artifact_options == {
        "endpoint_url": "http://minio:9000",
        "key": "from-MINIO_ROOT_USER",
        "secret": "from-MINIO_ROOT_PASSWORD",
    }
    # workers reach artifacts through the server only: they need no store credentials
    worker_env = services["worker"]["environment"]
    assert not any(k.startswith(("VITCUBE_ARTIFACT", "MINIO")) for k in worker_env)


def test_dockerfile_installs_the_package_and_every_top_level_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # with the s3 extra: s3fs for an S3/MinIO artifact store
    assert re.search(r'^RUN pip install "\.\[s3\]"$', dockerfile, flags=re.MULTILINE)
    for package in ("models", "search", "service", "workers", "migrations", "vitcube"):
        assert f"COPY {package} ./{package}" in dockerfile
    # the CPU-safe torch pin of pyproject must be satisfiable by the image's torch
    assert 'TORCH_SPEC="torch==2.13.0"' in dockerfile


def test_dockerfile_installs_a_c_compiler_for_torch_compile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    install = re.search(r"apt-get install -y --no-install-recommends ([^\n\\&]+)", dockerfile)
    assert install, "the image installs no system packages"
    packages = set(install.group(1).split())
    assert "gcc" in packages and "g++" in packages  # Triton (CUDA) and the inductor (CPU)
    # installed before the package: a source change does not reinstall the compiler
    assert dockerfile.index("apt-get install") < dockerfile.index('RUN pip install ".[s3]"')
