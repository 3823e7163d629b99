"""Key policies (update, rate limits, credits, enable/disable) and webhooks.

These need the server's ``PATCH /v1/keys/{id}``, ``rate_limit``/``credits`` at creation,
``cost`` in verify and the ``/v1/webhooks`` routes (SPEC §4 "Key policies" and "Webhooks").
"""

from __future__ import annotations

import pytest

import keyward


def test_create_with_a_rate_limit_and_credits(client: keyward.Client) -> None:
    created = client.keys.create(
        "metered",
        rate_limit=keyward.RateLimit(requests=100, per_seconds=60),
        credits=keyward.Credits(
            remaining=50, refill=keyward.CreditsRefill(amount=50, interval="monthly")
        ),
    )
    assert created.rate_limit == keyward.RateLimit(requests=100, per_seconds=60)
    assert created.credits == keyward.Credits(
        remaining=50, refill=keyward.CreditsRefill(amount=50, interval="monthly")
    )
    assert created.enabled is True
    fetched = client.keys.get(created.id)
    assert fetched.rate_limit == created.rate_limit
    assert fetched.credits == created.credits


def test_update_changes_only_what_is_given(client: keyward.Client) -> None:
    created = client.keys.create(
        "original",
        description="kept",
        scopes=["write", "flows:invoke"],
        meta={"plan": "free"},
        rate_limit=keyward.RateLimit(requests=5, per_seconds=1),
    )
    renamed = client.keys.update(created.id, name="renamed")
    assert renamed.name == "renamed"
    assert renamed.description == "kept"
    assert renamed.meta == {"plan": "free"}
    assert renamed.rate_limit == keyward.RateLimit(requests=5, per_seconds=1)

    changed = client.keys.update(
        created.id,
        description=None,
        meta={"plan": "pro"},
        scopes=["read"],
        rate_limit=None,
        credits=keyward.Credits(remaining=10),
    )
    assert changed.name == "renamed"
    assert changed.description is None
    assert changed.meta == {"plan": "pro"}
    assert changed.scopes == ["read"]
    assert changed.rate_limit is None
    assert changed.credits == keyward.Credits(remaining=10, refill=None)
    assert client.keys.update(created.id, credits=None).credits is None
    assert client.keys.get(created.id).name == "renamed"


def test_a_disabled_key_verifies_as_disabled_until_enabled(client: keyward.Client) -> None:
    created = client.keys.create("switch")
    disabled = client.keys.update(created.id, enabled=False)
    assert disabled.enabled is False
    assert client.verify(created.key).code == "DISABLED"
    with keyward.Client(client.base_url, api_key=created.key) as key_client:
        with pytest.raises(keyward.InvalidAPIKey):
            key_client.whoami()
    assert client.keys.update(created.id, enabled=True).enabled is True
    assert client.verify(created.key).code == "VALID"


def test_scopes_can_only_be_narrowed(client: keyward.Client) -> None:
    created = client.keys.create("narrow", scopes=["read"])
    with pytest.raises(keyward.APIError) as caught:
        client.keys.update(created.id, scopes=["admin"])
    assert caught.value.status in (403, 422)


def test_verify_spends_credits_by_cost(client: keyward.Client) -> None:
    created = client.keys.create("credits", credits=keyward.Credits(remaining=3))
    first = client.verify(created.key, cost=2)
    assert first.code == "VALID"
    assert first.credits == keyward.VerifyCredits(remaining=1)
    exhausted = client.verify(created.key, cost=2)
    assert (exhausted.valid, exhausted.code) == (False, "USAGE_EXCEEDED")
    assert client.verify(created.key).credits == keyward.VerifyCredits(remaining=0)


def test_verify_reports_the_rate_limit(client: keyward.Client) -> None:
    created = client.keys.create("limited", rate_limit=keyward.RateLimit(2, 3600))
    first = client.verify(created.key)
    assert first.rate_limit is not None
    assert first.rate_limit.limit == 2
    assert first.rate_limit.remaining == 1
    client.verify(created.key)
    limited = client.verify(created.key)
    assert (limited.valid, limited.code) == (False, "RATE_LIMITED")
    assert limited.rate_limit is not None
    assert limited.rate_limit.remaining == 0
    assert limited.rate_limit.reset > 0


def test_webhooks(client: keyward.Client) -> None:
    hook = client.webhooks.create("https://example.com/keyward", ["key.created", "key.revoked"])
    assert hook.secret
    assert hook.secret not in repr(hook)
    assert hook.url == "https://example.com/keyward"
    assert hook.events == ["key.created", "key.revoked"]
    listed = client.webhooks.list()
    assert [item.id for item in listed] == [hook.id]
    assert not isinstance(listed[0], keyward.CreatedWebhook)

    client.keys.create("fires key.created")
    deliveries = client.webhooks.deliveries(hook.id)
    assert [delivery.event for delivery in deliveries] == ["key.created"]
    assert deliveries[0].status in ("pending", "delivered", "failed")
    for attempt in deliveries[0].attempts:
        assert attempt.at

    client.webhooks.delete(hook.id)
    assert client.webhooks.list() == []
    with pytest.raises(keyward.NotFound):
        client.webhooks.delete(hook.id)
    with pytest.raises(keyward.NotFound):
        client.webhooks.deliveries(hook.id)


def test_webhooks_need_a_session(client: keyward.Client) -> None:
    key = client.keys.create("admin key").key
    with keyward.Client(client.base_url, api_key=key) as key_client:
        with pytest.raises(keyward.SessionRequired):
            key_client.webhooks.create("https://example.com/hook", ["key.created"])


async def test_async_policies_and_webhooks(async_client: keyward.AsyncClient) -> None:
    created = await async_client.keys.create("async policies", credits=keyward.Credits(remaining=1))
    assert created.credits == keyward.Credits(remaining=1)
    updated = await async_client.keys.update(
        created.id, enabled=False, rate_limit=keyward.RateLimit(10, 60)
    )
    assert updated.enabled is False
    assert updated.rate_limit == keyward.RateLimit(10, 60)
    assert (await async_client.verify(created.key, cost=1)).code == "DISABLED"

    hook = await async_client.webhooks.create("https://example.com/async", ["key.revoked"])
    assert [item.id for item in await async_client.webhooks.list()] == [hook.id]
    assert await async_client.webhooks.deliveries(hook.id) == []
    await async_client.webhooks.delete(hook.id)
    assert await async_client.webhooks.list() == []
