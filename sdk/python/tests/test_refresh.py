"""Refresh-and-retry on ``token_expired``, against a server whose access tokens live 2 seconds."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List

import httpx
import pytest

import keyward
from keyward import _credentials

from .support import Account, Server

# Past the longest lifetime of a token of the short-lived server (see its fixture).
EXPIRY = 2.2


def test_an_expired_token_is_refreshed_persisted_and_the_call_retried(
    short_lived_server: Server, credentials_file: Path
) -> None:
    account = Account(short_lived_server)
    with keyward.Client(short_lived_server.url) as client:
        first = client.login(account.email, account.password, persist=True)
        time.sleep(EXPIRY)
        assert client.whoami().email == account.email
        refreshed = client.credentials
    assert refreshed.access_token != first.access_token
    assert refreshed.refresh_token != first.refresh_token
    stored = json.loads(credentials_file.read_text())
    assert stored["access_token"] == refreshed.access_token
    assert stored["refresh_token"] == refreshed.refresh_token
    assert credentials_file.stat().st_mode & 0o777 == 0o600


def test_a_client_loaded_from_the_file_writes_refreshed_tokens_back(
    short_lived_server: Server, credentials_file: Path
) -> None:
    account = Account(short_lived_server)
    with keyward.Client(short_lived_server.url) as client:
        client.login(account.email, account.password, persist=True)
    first = json.loads(credentials_file.read_text())
    first_process = keyward.Client.from_env()
    second_process = keyward.Client.from_env()
    time.sleep(EXPIRY)

    assert first_process.tenant().name
    after_first = json.loads(credentials_file.read_text())
    assert after_first["refresh_token"] != first["refresh_token"]
    assert after_first["access_token"] == first_process.credentials.access_token

    # The second holds the spent refresh token: its refresh is refused, so it takes the pair
    # the first saved, and its call succeeds.
    assert second_process.whoami().email == account.email
    assert second_process.credentials.access_token == after_first["access_token"]
    first_process.close()
    second_process.close()


def test_without_a_refresh_token_token_expired_is_raised(
    short_lived_server: Server, credentials_file: Path
) -> None:
    account = Account(short_lived_server)
    stored = _credentials.StoredCredentials(
        url=short_lived_server.url,
        credentials=keyward.Credentials(access_token=account.access_token),
    )
    _credentials.save(credentials_file, stored)
    time.sleep(EXPIRY)
    with keyward.Client.from_env() as client, pytest.raises(keyward.TokenExpired) as caught:
        client.whoami()
    assert (caught.value.status, caught.value.code) == (401, "token_expired")


async def test_concurrent_async_calls_refresh_once(
    short_lived_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = Account(short_lived_server)
    async with keyward.AsyncClient(short_lived_server.url) as client:
        await client.login(account.email, account.password, persist=False)
        paths: List[str] = []
        send = client._http.send

        async def counting_send(request: httpx.Request) -> httpx.Response:
            paths.append(request.url.path)
            return await send(request)

        monkeypatch.setattr(client._http, "send", counting_send)
        await asyncio.sleep(EXPIRY)
        answers = await asyncio.gather(*(client.whoami() for _ in range(5)))
        assert {me.email for me in answers} == {account.email}
        assert paths.count("/v1/auth/refresh") == 1
        assert paths.count("/v1/auth/me") == 10, "five expired, five retried"
        await client.logout()


def test_concurrent_threads_refresh_once(
    short_lived_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = Account(short_lived_server)
    with account.client() as client:
        paths: List[str] = []
        send = client._http.send

        def counting_send(request: httpx.Request) -> httpx.Response:
            paths.append(request.url.path)
            return send(request)

        monkeypatch.setattr(client._http, "send", counting_send)
        time.sleep(EXPIRY)
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda _: client.tenant(), range(4)))
        assert {tenant.name for tenant in answers} == {account.tenant_name}
        assert paths.count("/v1/auth/refresh") == 1
