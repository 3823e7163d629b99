"""The credentials file shared with the CLI, ``from_env``, ``set_key``, and secrets in reprs."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Dict

import httpx
import pytest

import keyward
from keyward import _credentials

from .support import Account, Server, free_port, unique_email


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def read_json(path: Path) -> Dict[str, str]:
    document: Dict[str, str] = json.loads(path.read_text())
    return document


def test_the_path_follows_config_dir_then_xdg_then_home() -> None:
    everything = {"KEYWARD_CONFIG_DIR": "/a", "XDG_CONFIG_HOME": "/b", "HOME": "/c"}
    assert keyward.credentials_path(everything) == Path("/a/credentials.json")
    del everything["KEYWARD_CONFIG_DIR"]
    assert keyward.credentials_path(everything) == Path("/b/keyward/credentials.json")
    empty_is_unset = {"KEYWARD_CONFIG_DIR": "", "XDG_CONFIG_HOME": "", "HOME": "/c"}
    assert keyward.credentials_path(empty_is_unset) == Path("/c/.config/keyward/credentials.json")
    assert keyward.credentials_path({}) is None


def test_set_key_persists_a_private_file_that_from_env_reads(
    server: Server, credentials_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Account(server).client().keys.create("stored").key
    keyward.set_key(key, base_url=server.url + "/")
    assert read_json(credentials_file) == {"url": server.url, "api_key": key}
    assert mode(credentials_file) == 0o600
    assert mode(credentials_file.parent) == 0o700
    assert [path.name for path in credentials_file.parent.iterdir()] == ["credentials.json"]

    # This process uses the key at once, with or without the file.
    with keyward.Client(server.url) as client:
        assert client.credentials.api_key == key
        assert client.whoami().auth.method == "api_key"

    # A later process finds it in the file.
    monkeypatch.setattr("keyward._core._process_api_key", None)
    with keyward.Client.from_env() as client:
        assert client.base_url == server.url
        assert client.credentials.api_key == key
        assert client.whoami().auth.method == "api_key"


def test_set_key_without_persist_writes_nothing(credentials_file: Path) -> None:
    keyward.set_key("kw_memory_only", persist=False)
    assert not credentials_file.exists()
    with keyward.Client("http://127.0.0.1:7777") as client:
        assert client.credentials.api_key == "kw_memory_only"
    with keyward.Client("http://127.0.0.1:7777", api_key="kw_explicit") as client:
        assert client.credentials.api_key == "kw_explicit"
    with pytest.raises(ValueError, match="empty"):
        keyward.set_key("  ")


def test_from_env_precedence(credentials_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stored = _credentials.StoredCredentials(
        url="http://auth.example.com",
        credentials=keyward.Credentials(access_token="a.b.c", refresh_token="refresh"),
    )
    _credentials.save(credentials_file, stored)

    with keyward.Client.from_env() as client:
        assert client.base_url == "http://auth.example.com"
        assert client.credentials == stored.credentials

    # The same server written differently still gets the file's credentials.
    monkeypatch.setenv("KEYWARD_URL", "HTTP://AUTH.example.com:80/")
    with keyward.Client.from_env() as client:
        assert client.credentials == stored.credentials

    # Another server never sees them.
    monkeypatch.setenv("KEYWARD_URL", "http://other.example.com")
    with keyward.Client.from_env() as client:
        assert client.base_url == "http://other.example.com"
        assert client.credentials == keyward.Credentials()

    # KEYWARD_API_KEY overrides the file; empty variables count as unset.
    monkeypatch.setenv("KEYWARD_URL", "")
    monkeypatch.setenv("KEYWARD_API_KEY", "kw_from_env")
    with keyward.Client.from_env() as client:
        assert client.base_url == "http://auth.example.com"
        assert client.credentials == keyward.Credentials(api_key="kw_from_env")

    credentials_file.unlink()
    monkeypatch.delenv("KEYWARD_API_KEY")
    with keyward.Client.from_env() as client:
        assert client.base_url == keyward.DEFAULT_BASE_URL
        assert client.credentials == keyward.Credentials()


@pytest.mark.parametrize("content", ["{not json", "[]", '{"api_key": 42}', ""])
def test_a_corrupt_file_is_an_error_naming_it(credentials_file: Path, content: str) -> None:
    credentials_file.parent.mkdir(parents=True)
    credentials_file.write_text(content)
    with pytest.raises(keyward.CredentialsFileError) as caught:
        keyward.Client.from_env()
    assert caught.value.path == credentials_file
    assert str(credentials_file) in str(caught.value)
    assert "log in again" in str(caught.value)


def test_a_save_tightens_a_loose_file(credentials_file: Path) -> None:
    credentials_file.parent.mkdir(parents=True)
    credentials_file.write_text("{}")
    credentials_file.chmod(0o644)
    keyward.set_key("kw_x", base_url="http://auth.example.com")
    assert mode(credentials_file) == 0o600


def test_login_persist_writes_refreshable_session_and_logout_deletes_it(
    account: Account, credentials_file: Path
) -> None:
    with keyward.Client(account.server.url) as client:
        tokens = client.login(account.email, account.password)
    document = read_json(credentials_file)
    assert document == {
        "url": account.server.url,
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
    }
    assert mode(credentials_file) == 0o600

    with keyward.Client.from_env() as client:
        assert client.whoami().email == account.email
        client.logout()
    assert not credentials_file.exists()
    refreshed = httpx.post(
        f"{account.server.url}/v1/auth/refresh", json={"refresh_token": tokens.refresh_token}
    )
    assert refreshed.status_code == 401, "the stored session was revoked on the server"


def test_login_without_persist_leaves_the_file_alone(
    account: Account, credentials_file: Path
) -> None:
    keyward.set_key("kw_stored", base_url=account.server.url)
    before = credentials_file.read_text()
    with keyward.Client(account.server.url) as client:
        client.login(account.email, account.password, persist=False)
        client.logout()
    assert credentials_file.read_text() == before


def test_logout_forgets_the_credentials_even_when_the_server_is_unreachable(
    credentials_file: Path,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    stored = _credentials.StoredCredentials(
        url=url, credentials=keyward.Credentials(access_token="a.b.c", refresh_token="r")
    )
    _credentials.save(credentials_file, stored)
    with keyward.Client.from_env() as client:
        with pytest.raises(keyward.ConnectionError, match="/v1/auth/logout"):
            client.logout()
        assert client.credentials == keyward.Credentials()
    assert not credentials_file.exists()


def test_logout_leaves_another_servers_file_alone(server: Server, credentials_file: Path) -> None:
    account = Account(server)
    with keyward.Client(server.url) as client:
        client.login(account.email, account.password)
        # Meanwhile another program stored credentials for another server.
        keyward.set_key("kw_other", base_url="http://other.example.com")
        client.logout()
    assert read_json(credentials_file)["url"] == "http://other.example.com"


async def test_async_login_persist_and_from_env(account: Account, credentials_file: Path) -> None:
    async with keyward.AsyncClient(account.server.url) as client:
        await client.login(account.email, account.password, persist=True)
    assert mode(credentials_file) == 0o600
    async with keyward.AsyncClient.from_env() as client:
        assert (await client.whoami()).email == account.email
        await client.logout()
    assert not credentials_file.exists()


async def test_async_register_persist(server: Server, credentials_file: Path) -> None:
    email = unique_email()
    async with keyward.AsyncClient(server.url) as client:
        registration = await client.register(email, "a long enough password", persist=True)
    assert read_json(credentials_file)["access_token"] == registration.tokens.access_token


def test_no_secret_in_any_repr(account: Account) -> None:
    client = account.client()
    created = client.keys.create("shown once")
    tokens = client.login(account.email, account.password, persist=False)
    secrets = [created.key, tokens.access_token, tokens.refresh_token, account.password]
    key_client = keyward.Client(account.server.url, api_key=created.key)
    shown = [
        repr(client),
        repr(key_client),
        repr(client.credentials),
        str(client.credentials),
        repr(key_client.credentials),
        repr(created),
        str(created),
        repr(tokens),
        repr(keyward.AsyncClient(account.server.url, api_key=created.key)),
        repr(
            keyward.Registration(
                user=keyward.User("usr_1", account.email, None),
                tenant=keyward.Tenant("ten_1", "Acme", None),
                tokens=tokens,
                api_key=created,
            )
        ),
        repr(
            keyward.CreatedWebhook(
                id="wh_1",
                url="https://example.com/hook",
                events=[],
                created_at=None,
                secret="whsec",
            )
        ),
    ]
    for text in shown:
        for secret in [*secrets, "whsec"]:
            assert secret not in text, text
    assert "[redacted]" in repr(client.credentials)
    assert account.server.url in repr(client)
    assert created.id in repr(created)
    client.close()
    key_client.close()
