"""Fixtures: real ``keyward serve`` processes, and an isolated environment for every test."""

from __future__ import annotations

import os
from pathlib import Path
from typing import AsyncIterator, Dict, Iterator

import pytest

import keyward
from keyward import _core

from .support import Account, Server


def _serve(settings: Dict[str, str]) -> Iterator[Server]:
    server = Server(settings)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The suite's main server: every test registers its own users, so throttling is off."""
    yield from _serve({"KEYWARD_RATE_LIMITS__ENABLED": "false"})


@pytest.fixture(scope="session")
def short_lived_server() -> Iterator[Server]:
    """A server whose access tokens live 2 seconds, for the refresh-and-retry tests.

    The server counts whole seconds (a token is valid while ``now < exp = iat + 2``), so a
    token lives between 1 and 2 seconds: a fresh one survives its retry, and any is expired
    2.2 seconds after it was issued.
    """
    yield from _serve(
        {
            "KEYWARD_RATE_LIMITS__ENABLED": "false",
            "KEYWARD_SESSIONS__ACCESS_TOKEN_TTL_SECONDS": "2",
        }
    )


@pytest.fixture(scope="session")
def throttled_server() -> Iterator[Server]:
    """A server that allows one failed login per account per hour."""
    yield from _serve(
        {
            "KEYWARD_RATE_LIMITS__LOGIN_PER_ACCOUNT__REQUESTS": "1",
            "KEYWARD_RATE_LIMITS__LOGIN_PER_ACCOUNT__PER_SECONDS": "3600",
        }
    )


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private credentials directory and no KEYWARD_* variables, for every test.

    Returns the directory ``credentials.json`` goes to. The process-wide key of
    :func:`keyward.set_key` is forgotten after each test.
    """
    for name in list(os.environ):
        if name.startswith("KEYWARD_") and name != "KEYWARD_BIN":
            monkeypatch.delenv(name)
    config_dir = tmp_path / "config"
    monkeypatch.setenv("KEYWARD_CONFIG_DIR", str(config_dir))
    # Restored to None at the end of the test, whatever set_key did meanwhile.
    monkeypatch.setattr(_core, "_process_api_key", None)
    return config_dir


@pytest.fixture
def credentials_file(isolated_environment: Path) -> Path:
    """Where the test's ``credentials.json`` is written."""
    return isolated_environment / "credentials.json"


@pytest.fixture
def account(server: Server) -> Account:
    """A fresh user of the main server."""
    return Account(server, tenant_name="Acme")


@pytest.fixture
def client(account: Account) -> Iterator[keyward.Client]:
    """A sync client logged in as a fresh user."""
    with account.client() as client:
        yield client


@pytest.fixture
async def async_client(account: Account) -> AsyncIterator[keyward.AsyncClient]:
    """An async client logged in as a fresh user."""
    async with keyward.AsyncClient(account.server.url) as client:
        await client.login(account.email, account.password, persist=False)
        yield client
