"""Where the CLI finds its server and token: flags, then the environment, then a profile file.

`vitcube login --server URL --token T [--profile NAME]` writes the profile file (TOML, mode
0600: it holds a token) at `$VITCUBE_CONFIG`, else `config.toml` in the user's config
directory (`~/.config/vitcube/` on Linux, honouring `XDG_CONFIG_HOME`)::

    [profiles.default]
    server = "https://vitcube.example.org"
    token = "…"

A profile's token is sent only to that profile's server: `--server` naming another server
without `--token` sends no token. Imports the standard library only.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVER = "http://127.0.0.1:8000"
DEFAULT_PROFILE = "default"


class ProfileError(ValueError):
    """The profile file cannot be read, or names no such profile."""


@dataclass(frozen=True)
class Connection:
    """The server and token a command uses, and where each came from (for messages)."""

    server: str
    token: str | None
    source: str


def config_path() -> Path:
    explicit = os.environ.get("VITCUBE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    import click  # typer's; only for its platform rules of the user's config directory

    return Path(click.get_app_dir("vitcube")) / "config.toml"


def read_profiles(path: Path | None = None) -> dict[str, dict[str, str]]:
    """Every profile in the file ({} when there is no file)."""
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ProfileError(f"cannot read the profile file {path}: {error}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(
            f"the profile file {path} is not valid TOML ({error}); fix it or run "
            "vitcube login again"
        ) from None
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ProfileError(f"{path}: [profiles] must be a table of profiles")
    return {
        str(name): {str(k): str(v) for k, v in fields.items()}
        for name, fields in profiles.items()
        if isinstance(fields, dict)
    }


def save_profile(name: str, *, server: str, token: str | None, path: Path | None = None) -> Path:
    """Add or replace profile `name`; the file is written whole, readable by its owner only."""
    path = path or config_path()
    profiles = read_profiles(path)
    profiles[name] = {"server": server, **({"token": token} if token else {})}
    lines = ["# vitcube CLI profiles (vitcube login); holds tokens: keep it private", ""]
    for profile, fields in sorted(profiles.items()):
        lines.append(f"[profiles.{json.dumps(profile)}]")
        # A JSON string is a valid TOML basic string (the same escapes).
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in sorted(fields.items()))
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines))
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return path


def resolve(server: str | None, token: str | None, profile: str | None) -> Connection:
    """The connection a command uses: each of server and token from its flag, else from
    VITCUBE_SERVER / VITCUBE_TOKEN, else from the profile (VITCUBE_PROFILE or "default")."""
    server = server or os.environ.get("VITCUBE_SERVER") or None
    token = token or os.environ.get("VITCUBE_TOKEN") or None
    name = profile or os.environ.get("VITCUBE_PROFILE") or DEFAULT_PROFILE
    profiles = read_profiles()
    chosen = profiles.get(name)
    if chosen is None and name != DEFAULT_PROFILE:
        known = ", ".join(sorted(profiles)) or "none yet"
        raise ProfileError(
            f"no profile {name!r} in {config_path()} (profiles: {known}); create it with "
            f"vitcube login --profile {name} --server URL --token TOKEN"
        )
    chosen = chosen or {}
    source = "flags/environment"
    if server is None:
        server = chosen.get("server") or DEFAULT_SERVER
        source = f"profile {name!r}" if "server" in chosen else "the default server"
    if token is None and chosen.get("server", "").rstrip("/") == server.rstrip("/"):
        token = chosen.get("token")
    return Connection(server=server.rstrip("/"), token=token, source=source)
