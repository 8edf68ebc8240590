"""A real S3-protocol server on loopback for the artifact store's tests: moto's standalone server.

`moto_server()` starts `python -m moto.server` (moto[server], a dev dependency) on a free
loopback port in its own process, waits until it answers, creates a bucket and yields the
`S3Server` (endpoint, bucket, the fsspec storage options that reach it); it stops the server on
exit. The tests talk to it through s3fs exactly as a cluster would talk to MinIO or AWS S3.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

KEY = "vitcube-test"
SECRET = "vitcube-test-secret"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str

    @property
    def options(self) -> dict[str, Any]:
        """fsspec storage options for s3fs (VITCUBE_ARTIFACT_OPTIONS)."""
        return {"endpoint_url": self.endpoint_url, "key": KEY, "secret": SECRET}

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(log_dir: Path, bucket: str = "vitcube-artifacts") -> Iterator[S3Server]:
    port = _free_port()
    log = (log_dir / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited: {(log_dir / 'moto.log').read_text()}")
            try:
                httpx.get(endpoint, timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not answer within 30 s") from None
                time.sleep(0.2)
        # A bucket in the default region (s3fs's mkdir would send a location constraint).
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        ).create_bucket(Bucket=bucket)
        yield S3Server(endpoint, bucket)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
