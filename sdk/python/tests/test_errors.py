"""How the server's errors, and the network's, reach the caller."""

from __future__ import annotations

import builtins
import socket

import pytest

import keyward

from .support import PASSWORD, Account, Server, free_port, unique_email


def test_a_wrong_password_is_invalid_credentials_without_the_password(account: Account) -> None:
    with keyward.Client(account.server.url) as client:
        with pytest.raises(keyward.InvalidCredentials) as caught:
            client.login(account.email, "not the password at all", persist=False)
    error = caught.value
    assert (error.status, error.code) == (401, "invalid_credentials")
    assert error.message
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    assert str(error).startswith("invalid_credentials (401): ")
    assert error.request_id in str(error)
    assert "not the password" not in str(error) + repr(error)


def test_a_taken_email_is_email_taken(account: Account) -> None:
    with keyward.Client(account.server.url) as client:
        with pytest.raises(keyward.EmailTaken) as caught:
            client.register(account.email, PASSWORD)
    assert caught.value.status == 409


def test_invalid_fields_are_listed(client: keyward.Client) -> None:
    with pytest.raises(keyward.ValidationFailed) as caught:
        client.keys.create("9 starts with a digit")
    error = caught.value
    assert (error.status, error.code) == (422, "validation_failed")
    assert [field.field for field in error.errors] == ["name"]
    assert error.errors[0].message
    assert "name: " in str(error)

    with keyward.Client(client.base_url) as anonymous:
        with pytest.raises(keyward.ValidationFailed) as weak:
            anonymous.register(unique_email(), "short")
    assert "password" in [field.field for field in weak.value.errors]


def test_credentials_errors(server: Server) -> None:
    with keyward.Client(server.url) as anonymous:
        with pytest.raises(keyward.MissingCredentials) as missing:
            anonymous.keys.list()
    assert missing.value.status == 401
    with keyward.Client(server.url, api_key="kw_definitely_not_valid") as client:
        with pytest.raises(keyward.InvalidAPIKey) as invalid:
            client.whoami()
    assert invalid.value.code == "invalid_api_key"
    assert "kw_definitely_not_valid" not in str(invalid.value)


def test_a_read_only_key_cannot_mint_keys(client: keyward.Client) -> None:
    read_only = client.keys.create("reader", scopes=["read"])
    with keyward.Client(client.base_url, api_key=read_only.key) as reader:
        assert reader.keys.list()
        with pytest.raises(keyward.InsufficientScope) as caught:
            reader.keys.create("escalation")
    assert (caught.value.status, caught.value.code) == (403, "insufficient_scope")


def test_the_key_limit(client: keyward.Client) -> None:
    for number in range(10):
        client.keys.create(f"key {number}")
    with pytest.raises(keyward.KeyLimitReached) as caught:
        client.keys.create("one too many")
    assert caught.value.status == 409


def test_failed_logins_are_rate_limited_with_retry_after(throttled_server: Server) -> None:
    account = Account(throttled_server)

    def failed_login(client: keyward.Client) -> keyward.APIError:
        with pytest.raises(keyward.APIError) as caught:
            client.login(account.email, "wrong password!", persist=False)
        return caught.value

    with keyward.Client(throttled_server.url) as client:
        errors = [failed_login(client) for _ in range(3)]
    assert isinstance(errors[0], keyward.InvalidCredentials)
    limited = errors[-1]
    assert isinstance(limited, keyward.RateLimited)
    assert (limited.status, limited.code) == (429, "rate_limited")
    assert isinstance(limited.retry_after, int)
    assert limited.retry_after > 0


def test_nothing_listening_is_a_connection_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with keyward.Client(url, api_key="kw_secret_in_a_header") as client:
        with pytest.raises(keyward.ConnectionError) as caught:
            client.keys.get("key_123")
    error = caught.value
    assert isinstance(error, keyward.KeywardError)
    assert not isinstance(error, builtins.ConnectionError)
    assert error.url == f"{url}/v1/keys/key_123"
    assert str(error).startswith(f"request to {url}/v1/keys/key_123 failed: ")
    assert "kw_secret" not in str(error)


async def test_async_connection_error_and_timeout() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with keyward.AsyncClient(url) as client:
        with pytest.raises(keyward.ConnectionError, match=f"request to {url}/v1/tenant failed"):
            await client.tenant()

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        async with keyward.AsyncClient(url, timeout=0.3) as client:
            with pytest.raises(keyward.ConnectionError, match="timed out") as caught:
                await client.whoami()
    assert caught.value.url == f"{url}/v1/auth/me"


def test_an_answer_that_is_not_a_problem_is_a_decode_error(server: Server) -> None:
    # Unknown pages under /console answer HTML, not problem+json.
    with keyward.Client(f"{server.url}/console") as client:
        with pytest.raises(keyward.DecodeError) as caught:
            client.whoami()
    assert caught.value.status == 404
    assert caught.value.request_id is not None
    assert "text/html" in str(caught.value)


async def test_async_errors_carry_the_same_fields(server: Server) -> None:
    async with keyward.AsyncClient(server.url, api_key="kw_nope") as client:
        with pytest.raises(keyward.InvalidAPIKey) as caught:
            await client.keys.list()
    assert caught.value.status == 401
    assert caught.value.request_id is not None
