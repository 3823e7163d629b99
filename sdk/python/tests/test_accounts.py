"""Registration, login, whoami and logout against a real server, sync and async."""

from __future__ import annotations

import httpx
import pytest

import keyward

from .support import PASSWORD, Account, Server, unique_email


def me_status(server: Server, bearer: str) -> int:
    """The status of ``GET /v1/auth/me`` with ``bearer``, sent by hand."""
    response = httpx.get(f"{server.url}/v1/auth/me", headers={"Authorization": f"Bearer {bearer}"})
    return response.status_code


def test_register_creates_a_user_and_tenant_and_logs_in(server: Server) -> None:
    email = unique_email()
    with keyward.Client(server.url) as client:
        registration = client.register(email, PASSWORD, name="Ada", tenant_name="Analytical")
        assert registration.user.email == email
        assert registration.user.id.startswith("usr_")
        assert registration.user.name == "Ada"
        assert registration.tenant.name == "Analytical"
        assert registration.tenant.id.startswith("ten_")
        assert registration.tokens.token_type == "bearer"
        assert registration.tokens.expires_in > 0
        assert registration.api_key is None
        assert client.credentials.access_token == registration.tokens.access_token

        me = client.whoami()
        assert me.email == email
        assert me.tenant_name == "Analytical"
        assert me.user.id == registration.user.id
        assert me.auth.method == "session"
        assert me.auth.key_id is None
        assert client.validate_credentials() == me

        tenant = client.tenant()
        assert tenant.id == registration.tenant.id
        assert tenant.name == "Analytical"
        assert tenant.created_at is not None


def test_login_whoami_and_logout_revokes_the_session(account: Account) -> None:
    with keyward.Client(account.server.url) as client:
        tokens = client.login(account.email.upper(), account.password, persist=False)
        assert tokens.token_type == "bearer"
        assert client.credentials.access_token == tokens.access_token
        assert client.credentials.refresh_token == tokens.refresh_token
        assert client.whoami().email == account.email
        assert me_status(account.server, tokens.access_token) == 200

        client.logout()
        assert client.credentials == keyward.Credentials()
        assert me_status(account.server, tokens.access_token) == 401
        refreshed = httpx.post(
            f"{account.server.url}/v1/auth/refresh",
            json={"refresh_token": tokens.refresh_token},
        )
        assert refreshed.status_code == 401
        # The client now holds nothing, so it is refused as anonymous.
        with pytest.raises(keyward.MissingCredentials):
            client.whoami()


def test_logout_of_an_api_key_client_forgets_the_key_but_it_keeps_working(
    client: keyward.Client,
) -> None:
    created = client.keys.create("script")
    with keyward.Client(client.base_url, api_key=created.key) as key_client:
        assert key_client.whoami().auth.method == "api_key"
        key_client.logout()
        assert key_client.credentials.api_key is None
    assert client.verify(created.key).valid


def test_logout_with_all_sessions_ends_the_other_sessions_too(account: Account) -> None:
    first = account.client()
    second = account.client()
    other_token = second.credentials.access_token
    assert other_token is not None
    first.logout(all_sessions=True)
    assert me_status(account.server, other_token) == 401
    first.close()
    second.close()


async def test_async_register_login_whoami_tenant_logout(server: Server) -> None:
    email = unique_email()
    async with keyward.AsyncClient(server.url) as client:
        registration = await client.register(email, PASSWORD, tenant_name="Async Inc")
        assert registration.user.email == email
        assert registration.user.name is None
        assert (await client.whoami()).tenant_name == "Async Inc"

    async with keyward.AsyncClient(server.url, timeout=10) as client:
        tokens = await client.login(email, PASSWORD, persist=False)
        me = await client.validate_credentials()
        assert me.email == email
        assert me.auth.method == "session"
        tenant = await client.tenant()
        assert tenant.id == registration.tenant.id
        await client.logout()
        assert client.credentials == keyward.Credentials()
        assert me_status(server, tokens.access_token) == 401
