"""Large third-party files served by this server itself (no CDN): Plotly.js, Swagger UI, ReDoc.

`serve_packed` answers with the file gzipped when the browser accepts it, an ETag and a day of
caching; each file is read and compressed once per process. Imports nothing of ours.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import cache
from pathlib import Path

from fastapi import Request, Response


@cache
def _packed(path: Path) -> tuple[bytes, bytes, str]:
    raw = path.read_bytes()
    return raw, gzip.compress(raw, compresslevel=6), hashlib.sha256(raw).hexdigest()[:16]


def serve_packed(request: Request, path: Path, media_type: str) -> Response:
    """`path` as the response: 304 for a matching If-None-Match, gzip where accepted."""
    raw, packed, digest = _packed(path)
    etag = f'"{digest}"'
    headers = {
        "Cache-Control": "public, max-age=86400",
        "ETag": etag,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(packed, media_type=media_type, headers=headers)
    return Response(raw, media_type=media_type, headers=headers)
