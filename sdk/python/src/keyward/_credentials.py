"""Credentials, and the ``credentials.json`` file the ``keyward`` CLI keeps them in.

The file is shared with the CLI (SPEC §5): the same location, the same fields (``url``,
``api_key``, ``access_token``, ``refresh_token``), the same guarantees: mode 0600 in a 0700
directory, replaced atomically, and never used for a server other than the one it names.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional
from urllib.parse import urlsplit

from ._errors import CredentialsFileError

__all__ = ["Credentials", "credentials_path"]

CREDENTIALS_FILE_NAME = "credentials.json"
_FIELDS = ("api_key", "access_token", "refresh_token")
_REDACTED = "[redacted]"


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a client presents to the server; the fields of ``credentials.json`` minus ``url``.

    A request presents the access token when there is one, else the API key, as
    ``Authorization: Bearer``. ``repr()`` shows which credentials are held, never their values.

    Attributes:
        api_key: A long-lived API key (``kw_…``).
        access_token: A session's short-lived access token (a JWT).
        refresh_token: The session's refresh token, spent on ``token_expired`` for a new pair.

    """

    api_key: Optional[str] = None
    access_token: Optional[str] = None
    refresh_token: Optional[str] = None

    @property
    def bearer(self) -> Optional[str]:
        """The credential a request presents: the access token, else the API key."""
        return self.access_token or self.api_key

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={_REDACTED if getattr(self, name) else None!r}" for name in _FIELDS
        )
        return f"Credentials({shown})"


def credentials_path(environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """Where the CLI and this package keep credentials, from ``environ`` (default ``os.environ``).

    ``$KEYWARD_CONFIG_DIR/credentials.json``, else ``$XDG_CONFIG_HOME/keyward/credentials.json``,
    else ``~/.config/keyward/credentials.json`` (from ``$HOME``). Empty variables count as
    unset. ``None`` when none of them is set.
    """
    env = os.environ if environ is None else environ

    def setting(name: str) -> Optional[Path]:
        value = env.get(name, "")
        return Path(value) if value else None

    config_dir = setting("KEYWARD_CONFIG_DIR")
    xdg = setting("XDG_CONFIG_HOME")
    home = setting("HOME")
    if config_dir is not None:
        directory = config_dir
    elif xdg is not None:
        directory = xdg / "keyward"
    elif home is not None:
        directory = home / ".config" / "keyward"
    else:
        return None
    return directory / CREDENTIALS_FILE_NAME


def normal_url(raw: str) -> str:
    """``raw`` in a canonical form for comparing servers.

    The scheme and host lower-cased, a default port dropped, no trailing slash.
    """
    text = raw.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text.rstrip("/")
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and (scheme, port) not in {("http", 80), ("https", 443)}:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path}".rstrip("/")


@dataclass(frozen=True, repr=False)
class StoredCredentials:
    """The contents of ``credentials.json``: a server's URL and the credentials for it."""

    url: Optional[str]
    credentials: Credentials

    def is_for(self, base_url: str) -> bool:
        """Whether these credentials may be sent to ``base_url``.

        True when the file names no URL or the same one (a trailing slash, letter case of the
        scheme and host, and a default port aside): credentials issued by one server are never
        sent to another.
        """
        return self.url is None or normal_url(self.url) == normal_url(base_url)

    def __repr__(self) -> str:
        return f"StoredCredentials(url={self.url!r}, credentials={self.credentials!r})"


def load(path: Path) -> Optional[StoredCredentials]:
    """The credentials file at ``path``; ``None`` when it does not exist.

    Unknown fields are ignored, so a file written by a newer version still loads. Raises
    :class:`CredentialsFileError` naming the file when it cannot be read or is not the JSON
    object it should be.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise CredentialsFileError(
            path, f"cannot read the credentials file {path}: {error}"
        ) from error

    def corrupt(reason: str) -> CredentialsFileError:
        return CredentialsFileError(
            path,
            f"the credentials file {path} is corrupt ({reason}): delete it, then log in again "
            "(`keyward login`, or `Client.login(..., persist=True)`)",
        )

    try:
        document = json.loads(text)
    except ValueError as error:
        # The message of json's error names a position, never the file's content.
        raise corrupt(str(error)) from None
    if not isinstance(document, dict):
        raise corrupt("expected a JSON object")
    values: Dict[str, Optional[str]] = {}
    for name in ("url", *_FIELDS):
        value = document.get(name)
        if value is not None and not isinstance(value, str):
            raise corrupt(f"{name} is not a string")
        values[name] = value
    url = values.pop("url")
    return StoredCredentials(url=url, credentials=Credentials(**values))


_temp_counter = itertools.count()


def save(path: Path, stored: StoredCredentials) -> None:
    """Writes the credentials file at ``path``: mode 0600, its directory created with 0700.

    Atomic: the JSON goes to a temporary file in the same directory, created with mode 0600,
    synced, then renamed over ``path``. A reader sees the old file or the new one, never a mix,
    and the secret is never readable by others, even for an instant.
    """
    document = {"url": stored.url} if stored.url is not None else {}
    for name in _FIELDS:
        value = getattr(stored.credentials, name)
        if value is not None:
            document[name] = value
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    directory = path.parent
    temp = directory / f".{path.name}.{os.getpid()}.{next(_temp_counter)}.tmp"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
    except OSError as error:
        raise CredentialsFileError(
            path, f"cannot write the credentials file {path}: {error}"
        ) from error
    _sync_directory(directory)


def _sync_directory(directory: Path) -> None:
    """Makes a rename in ``directory`` durable, where the platform can sync a directory."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def remove(path: Path) -> None:
    """Deletes the credentials file at ``path``; a missing file is fine."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as error:
        raise CredentialsFileError(
            path, f"cannot delete the credentials file {path}: {error}"
        ) from error
