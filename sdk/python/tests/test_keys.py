"""API keys, verification and usage against a real server, sync and async."""

from __future__ import annotations

import asyncio
import time

import pytest

import keyward

from .support import Account


def test_key_lifecycle(client: keyward.Client) -> None:
    created = client.keys.create(
        "ci",
        description="for the CI",
        expires_in_days=90,
        scopes=["read"],
        meta={"plan": "pro"},
    )
    assert created.key.startswith("kw_")
    assert created.id.startswith("key_")
    assert created.name == "ci"
    assert created.description == "for the CI"
    assert created.scopes == ["read"]
    assert created.meta == {"plan": "pro"}
    assert created.status == "active"
    assert created.expires_at is not None
    assert created.last_used_at is None
    assert created.start == created.key[:8]
    assert created.end == created.key[-4:]
    assert created.masked == f"{created.start}…{created.end}"
    assert created.enabled is True

    listed = client.keys.list()
    assert [key.id for key in listed] == [created.id]
    assert not isinstance(listed[0], keyward.CreatedKey)
    fetched = client.keys.get(created.id)
    assert fetched.id == created.id
    assert fetched.meta == {"plan": "pro"}

    # The key authenticates by itself.
    with keyward.Client(client.base_url, api_key=created.key) as key_client:
        me = key_client.whoami()
        assert me.auth.method == "api_key"
        assert me.auth.key_id == created.id
        assert me.auth.scopes == ["read"]
        assert [key.id for key in key_client.keys.list()] == [created.id]

    rotated = client.keys.rotate(created.id)
    assert rotated.id != created.id
    assert rotated.key != created.key
    assert rotated.name == "ci"
    assert rotated.scopes == ["read"]
    assert client.verify(created.key).code == "REVOKED"
    assert client.verify(rotated.key).code == "VALID"

    graceful = client.keys.rotate(rotated.id, grace_period_seconds=3600)
    assert client.verify(rotated.key).valid, "the old key works during the grace period"
    assert client.keys.get(rotated.id).expires_at is not None

    client.keys.revoke(graceful.id)
    assert client.verify(graceful.key).code == "REVOKED"
    assert client.keys.get(graceful.id).status == "revoked"
    active = {key.id for key in client.keys.list()}
    assert graceful.id not in active
    assert rotated.id in active
    every = {key.id for key in client.keys.list(include_revoked=True)}
    assert {created.id, rotated.id, graceful.id} <= every


def test_verify_reports_scopes_and_metadata_and_sends_no_credential(
    client: keyward.Client,
) -> None:
    created = client.keys.create("svc", scopes=["read", "flows:invoke"], meta={"tier": 2})
    # A client without any credential can verify.
    with keyward.Client(client.base_url) as anonymous:
        verification = anonymous.verify(created.key, scopes=["read"])
    assert verification.valid is True
    assert verification.code == "VALID"
    assert verification.key_id == created.id
    assert verification.tenant_id == client.whoami().tenant.id
    assert verification.user_id == client.whoami().user.id
    assert sorted(verification.scopes or []) == ["flows:invoke", "read"]
    assert verification.meta == {"tier": 2}
    assert verification.expires_at is None

    refused = client.verify(created.key, scopes=["write"])
    assert (refused.valid, refused.code) == (False, "INSUFFICIENT_SCOPE")
    unknown = client.verify("kw_not_a_real_key")
    assert (unknown.valid, unknown.code, unknown.key_id) == (False, "NOT_FOUND", None)


def test_usage_counts_verifications(client: keyward.Client) -> None:
    created = client.keys.create("metered", scopes=["read"])
    for _ in range(3):
        assert client.verify(created.key).valid
    assert client.verify(created.key, scopes=["write"]).code == "INSUFFICIENT_SCOPE"
    # Usage events show within 5 seconds.
    deadline = time.monotonic() + 8
    usage = client.usage(days=7, key_id=created.id)
    while usage.executions < 4 and time.monotonic() < deadline:
        time.sleep(0.25)
        usage = client.usage(days=7, key_id=created.id)
    assert usage.executions == 4
    assert usage.succeeded == 3
    assert usage.failed == 1
    assert usage.success_rate == pytest.approx(0.75)
    assert usage.avg_duration_ms is not None
    assert len(usage.days) == 7
    assert usage.days[-1].date == usage.to_date
    assert usage.days[0].date == usage.from_date
    assert usage.days[-1].total == 4

    tenant_wide = client.usage()
    assert len(tenant_wide.days) == 30
    assert tenant_wide.executions >= 4


def test_another_users_key_is_not_found(client: keyward.Client, account: Account) -> None:
    created = client.keys.create("mine")
    with Account(account.server).client() as stranger:
        with pytest.raises(keyward.NotFound) as caught:
            stranger.keys.get(created.id)
        error = caught.value
        assert error.status == 404
        assert error.code == "not_found"
        assert error.message
        assert error.request_id is not None
        assert error.request_id.startswith("req_")
        with pytest.raises(keyward.NotFound):
            stranger.keys.revoke(created.id)
        with pytest.raises(keyward.NotFound):
            stranger.keys.rotate(created.id)
        with pytest.raises(keyward.NotFound):
            stranger.usage(key_id=created.id)
    assert client.verify(created.key).valid, "the stranger changed nothing"


async def test_async_keys_verify_and_usage(async_client: keyward.AsyncClient) -> None:
    created = await async_client.keys.create(
        "async", description="d", expires_in_days=7, scopes=["write"], meta={"a": 1}
    )
    assert created.key.startswith("kw_")
    assert created.scopes == ["write"]
    assert [key.id for key in await async_client.keys.list()] == [created.id]
    assert (await async_client.keys.get(created.id)).description == "d"

    results = await asyncio.gather(
        async_client.verify(created.key, scopes=["read"]),
        async_client.verify(created.key, scopes=["admin"]),
    )
    assert [result.code for result in results] == ["VALID", "INSUFFICIENT_SCOPE"]

    rotated = await async_client.keys.rotate(created.id, grace_period_seconds=0)
    assert (await async_client.verify(created.key)).code == "REVOKED"
    await async_client.keys.revoke(rotated.id)
    assert (await async_client.keys.get(rotated.id)).status == "revoked"
    assert await async_client.keys.list() == []
    assert len(await async_client.keys.list(include_revoked=True)) == 2

    usage = await async_client.usage(days=3)
    assert len(usage.days) == 3
    with pytest.raises(keyward.ValidationFailed) as caught:
        await async_client.usage(days=91)
    assert caught.value.status == 422
