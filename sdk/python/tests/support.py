"""Helpers of the tests: a real ``keyward serve`` process, and registered users.

The server binary is ``$KEYWARD_BIN``, by default the repository's ``target/debug/keyward``
(build it with ``cargo build -p keyward`` at the repository's root).
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Mapping, Optional

import httpx
import pytest

import keyward

SDK_DIR = Path(__file__).resolve().parent.parent
DEFAULT_BIN = SDK_DIR.parent.parent / "target" / "debug" / "keyward"
PASSWORD = "a sturdy test passphrase"
_users = itertools.count()


def keyward_bin() -> Path:
    """The server binary; fails the run, saying how to build it, when it is missing."""
    configured = os.environ.get("KEYWARD_BIN")
    path = Path(configured).resolve() if configured else DEFAULT_BIN
    if not path.is_file():
        pytest.fail(
            f"the keyward server binary {path} does not exist: build it with "
            "`cargo build -p keyward` at the repository's root, or point KEYWARD_BIN at one",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """One ``keyward serve`` process on a free port, with its own SQLite database."""

    def __init__(self, settings: Mapping[str, str]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="keyward-sdk-test-")
        self.url = f"http://127.0.0.1:{free_port()}"
        # The server sees none of the caller's KEYWARD_* variables, only these settings.
        env = {name: value for name, value in os.environ.items() if not name.startswith("KEYWARD")}
        env.update(settings)
        env.setdefault("RUST_LOG", "warn")
        self._log = open(Path(self._dir.name) / "server.log", "w+b")  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                str(keyward_bin()),
                "serve",
                "--listen",
                self.url.removeprefix("http://"),
                "--database-url",
                f"sqlite://{self._dir.name}/k.db",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_healthy()

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.stop()
                pytest.fail(f"keyward serve exited at start-up:\n{self.log()}", pytrace=False)
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"keyward serve did not answer /healthz in 30 s:\n{self.log()}", pytrace=False)

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()
        self._dir.cleanup()


def unique_email() -> str:
    return f"user{next(_users)}-{uuid.uuid4().hex[:8]}@example.com"


class Account:
    """A registered user of a test server."""

    def __init__(self, server: Server, tenant_name: Optional[str] = None) -> None:
        self.email = unique_email()
        self.password = PASSWORD
        self.server = server
        with keyward.Client(server.url) as client:
            registration = client.register(
                self.email, self.password, name="Test User", tenant_name=tenant_name
            )
        self.tenant_name = registration.tenant.name
        self.access_token = registration.tokens.access_token

    def client(self) -> keyward.Client:
        """A new client logged in as this user (not persisted)."""
        client = keyward.Client(self.server.url)
        client.login(self.email, self.password, persist=False)
        return client
