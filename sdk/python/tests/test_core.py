"""The sans-IO core on its own: the requests it builds and how it reads answers, no server."""

from __future__ import annotations

import json
from typing import Callable, List, Mapping, Optional, Tuple, Type, TypeVar

import httpx
import pytest

import keyward
from keyward import _core
from keyward._core import UNSET, Core, Done, Exclusive, Operation, advance
from keyward._credentials import Credentials
from keyward._errors import api_error

_T = TypeVar("_T")
Responder = Callable[[httpx.Request], httpx.Response]


def drive(operation: Operation[_T], respond: Responder) -> _T:
    """Runs ``operation`` with ``respond`` standing for the network (no lock needed here)."""
    sent: object = None
    while True:
        step = advance(operation, sent, None)
        if isinstance(step, Done):
            return step.value
        sent = drive(step.operation, respond) if isinstance(step, Exclusive) else respond(step)


def recorder(
    status: int = 200, body: Optional[object] = None, headers: Optional[Mapping[str, str]] = None
) -> Tuple[List[httpx.Request], Responder]:
    seen: List[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body, headers=headers, request=request)

    return seen, respond


KEY_JSON = {
    "id": "key_1",
    "name": "ci",
    "description": None,
    "scopes": ["read"],
    "masked": "kw_AbCdE…wxYz",
    "start": "kw_AbCdE",
    "end": "wxYz",
    "created_at": "2026-11-22T10:00:00Z",
    "expires_at": None,
    "last_used_at": None,
    "status": "active",
    "meta": {"plan": "pro"},
}


def core(api_key: Optional[str] = "kw_clientkey") -> Core:
    return Core("http://auth.example.com/prefix/", Credentials(api_key=api_key), 5.0)


def body_of(request: httpx.Request) -> object:
    return json.loads(request.content)


def test_update_sends_only_the_fields_given_and_null_for_none() -> None:
    seen, respond = recorder(body=KEY_JSON)
    changes: Mapping[str, object] = {
        "name": "renamed",
        "description": UNSET,
        "meta": UNSET,
        "enabled": False,
        "scopes": ("read",),
        "rate_limit": None,
        "credits": keyward.Credits(remaining=5, refill=keyward.CreditsRefill(5, "daily")),
    }
    key = drive(core().update_key("key_1", changes), respond)
    assert key.id == "key_1"
    (request,) = seen
    assert request.method == "PATCH"
    assert str(request.url) == "http://auth.example.com/prefix/v1/keys/key_1"
    assert body_of(request) == {
        "name": "renamed",
        "enabled": False,
        "scopes": ["read"],
        "rate_limit": None,
        "credits": {"remaining": 5, "refill": {"amount": 5, "interval": "daily"}},
    }


def test_update_with_nothing_given_sends_an_empty_object() -> None:
    seen, respond = recorder(body=KEY_JSON)
    drive(core().update_key("key_1", {"name": UNSET, "rate_limit": UNSET}), respond)
    assert body_of(seen[0]) == {}


def test_create_leaves_out_what_is_not_given() -> None:
    seen, respond = recorder(body={**KEY_JSON, "key": "kw_fullkey"})
    created = drive(
        core().create_key(
            "ci",
            description=None,
            expires_in_days=None,
            scopes=None,
            meta=None,
            rate_limit=keyward.RateLimit(requests=10, per_seconds=60),
            credits=None,
        ),
        respond,
    )
    assert created.key == "kw_fullkey"
    assert body_of(seen[0]) == {"name": "ci", "rate_limit": {"requests": 10, "per_seconds": 60}}


def test_requests_carry_the_credential_except_verify() -> None:
    seen, respond = recorder(body={"valid": False, "code": "NOT_FOUND"})
    verification = drive(core().verify("kw_presented", ["read"], 3), respond)
    assert verification.code == "NOT_FOUND"
    assert verification.valid is False
    assert "authorization" not in seen[0].headers
    assert body_of(seen[0]) == {"key": "kw_presented", "scopes": ["read"], "cost": 3}

    seen, respond = recorder(body={"keys": [KEY_JSON]})
    drive(core().list_keys(include_revoked=True), respond)
    request = seen[0]
    assert request.headers["authorization"] == "Bearer kw_clientkey"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"].startswith("keyward-python/")
    assert request.url.params["include_revoked"] == "true"


def test_ids_are_one_encoded_path_segment() -> None:
    seen, respond = recorder(body=KEY_JSON)
    drive(core().get_key("a/b?c#d"), respond)
    assert seen[0].url.raw_path == b"/prefix/v1/keys/a%2Fb%3Fc%23d"
    for bad in ["", ".", ".."]:
        with pytest.raises(ValueError, match="is not an id"):
            drive(core().get_key(bad), respond)


@pytest.mark.parametrize(
    ("base_url", "complaint"),
    [
        ("kw_secretvalue", "http:// or https://"),
        ("ftp://example.com", "http:// or https://"),
        ("https://user:kw_secretvalue@example.com", "credentials"),
        ("https://example.com/?api_key=kw_secretvalue", "query"),
        ("https://example.com/#kw_secretvalue", "fragment"),
    ],
)
def test_unusable_base_urls_are_refused_without_repeating_them(
    base_url: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        keyward.Client(base_url)
    assert "secretvalue" not in str(caught.value)


def test_parsing_ignores_unknown_members_and_defaults_new_ones() -> None:
    _, respond = recorder(body={**KEY_JSON, "brand_new_member": {"x": 1}})
    key = drive(core().get_key("key_1"), respond)
    assert key.enabled is True
    assert key.rate_limit is None
    assert key.credits is None
    assert key.meta == {"plan": "pro"}

    policies = {
        **KEY_JSON,
        "enabled": False,
        "rate_limit": {"requests": 5, "per_seconds": 1},
        "credits": {"remaining": 7, "refill": None},
    }
    _, respond = recorder(body=policies)
    key = drive(core().get_key("key_1"), respond)
    assert key.enabled is False
    assert key.rate_limit == keyward.RateLimit(requests=5, per_seconds=1)
    assert key.credits == keyward.Credits(remaining=7, refill=None)


def test_an_answer_of_the_wrong_shape_is_a_decode_error() -> None:
    _, respond = recorder(
        body={**KEY_JSON, "scopes": "read"}, headers={"x-request-id": "req_shape"}
    )
    with pytest.raises(keyward.DecodeError, match=r"key\.scopes is not a list") as caught:
        drive(core().get_key("key_1"), respond)
    assert caught.value.status == 200
    assert caught.value.request_id == "req_shape"

    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>", request=request)

    with pytest.raises(keyward.DecodeError, match="problem\\+json") as decode:
        drive(core().me(), html)
    assert decode.value.status == 502


def test_a_refresh_happens_once_and_the_request_is_retried() -> None:
    client = Core("http://auth.example.com", Credentials("kw_k", "old.access.token", "r1"), 5.0)
    expired = {"code": "token_expired", "status": 401, "detail": "expired"}
    me = {
        "user": {"id": "usr_1", "email": "ada@example.com", "name": None},
        "tenant": {"id": "ten_1", "name": "Acme"},
        "auth": {"method": "session", "scopes": ["admin"]},
    }
    sent: List[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.url.path} {request.headers.get('authorization')}")
        if request.url.path == "/v1/auth/refresh":
            assert body_of(request) == {"refresh_token": "r1"}
            pair = {"access_token": "new.access.token", "refresh_token": "r2", "expires_in": 1}
            return httpx.Response(200, json=pair, request=request)
        if request.headers["authorization"] == "Bearer old.access.token":
            return httpx.Response(401, json=expired, request=request)
        return httpx.Response(200, json=me, request=request)

    assert drive(client.me(), respond).email == "ada@example.com"
    assert sent == [
        "/v1/auth/me Bearer old.access.token",
        "/v1/auth/refresh None",
        "/v1/auth/me Bearer new.access.token",
    ]
    assert client.credentials == Credentials("kw_k", "new.access.token", "r2")


def test_a_failed_refresh_raises_the_original_token_expired() -> None:
    client = Core("http://auth.example.com", Credentials(None, "a.b.c", "spent"), 5.0)

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/refresh":
            problem = {"code": "invalid_token", "detail": "spent"}
            return httpx.Response(401, json=problem, request=request)
        problem = {"code": "token_expired", "detail": "The access token has expired."}
        return httpx.Response(401, json=problem, headers={"x-request-id": "req_1"}, request=request)

    with pytest.raises(keyward.TokenExpired) as caught:
        drive(client.tenant(), respond)
    assert caught.value.request_id == "req_1"
    assert caught.value.message == "The access token has expired."


ALL_CODES = {
    "invalid_request": keyward.InvalidRequest,
    "missing_credentials": keyward.MissingCredentials,
    "invalid_token": keyward.InvalidToken,
    "token_expired": keyward.TokenExpired,
    "invalid_api_key": keyward.InvalidAPIKey,
    "invalid_credentials": keyward.InvalidCredentials,
    "insufficient_scope": keyward.InsufficientScope,
    "session_required": keyward.SessionRequired,
    "forbidden": keyward.Forbidden,
    "not_found": keyward.NotFound,
    "email_taken": keyward.EmailTaken,
    "key_limit_reached": keyward.KeyLimitReached,
    "payload_too_large": keyward.PayloadTooLarge,
    "validation_failed": keyward.ValidationFailed,
    "rate_limited": keyward.RateLimited,
    "usage_exceeded": keyward.UsageExceeded,
    "internal": keyward.Internal,
    "bad_gateway": keyward.BadGateway,
    "gateway_timeout": keyward.GatewayTimeout,
    "unavailable": keyward.Unavailable,
}


@pytest.mark.parametrize(("code", "cls"), sorted(ALL_CODES.items()))
def test_every_code_has_its_exception(code: str, cls: Type[keyward.APIError]) -> None:
    problem = {"code": code, "detail": "Something.", "request_id": "req_body"}
    error = api_error(400, problem, "req_header", None)
    assert type(error) is cls
    assert isinstance(error, keyward.KeywardError)
    assert (error.status, error.code, error.message, error.request_id) == (
        400,
        code,
        "Something.",
        "req_body",
    )
    assert str(error) == f"{code} (400): Something. [request req_body]"


def test_an_unknown_code_is_an_api_error_with_the_header_request_id() -> None:
    error = api_error(418, {"code": "teapot", "title": "Teapot"}, "req_header", None)
    assert type(error) is keyward.APIError
    assert (error.code, error.message, error.request_id) == ("teapot", "Teapot", "req_header")


def test_retry_after_and_field_errors_are_read() -> None:
    limited = api_error(429, {"code": "rate_limited"}, None, "17")
    assert isinstance(limited, keyward.RateLimited)
    assert limited.retry_after == 17
    unknown = api_error(429, {"code": "rate_limited"}, None, "Wed, 21 Oct 2026 07:28:00 GMT")
    assert isinstance(unknown, keyward.RateLimited)
    assert unknown.retry_after is None
    problem = {
        "code": "validation_failed",
        "detail": "The request is invalid.",
        "errors": [{"field": "name", "message": "too long"}, "junk"],
    }
    invalid = api_error(422, problem, None, None)
    assert isinstance(invalid, keyward.ValidationFailed)
    assert invalid.errors == [keyward.FieldError(field="name", message="too long")]
    assert "name: too long" in str(invalid)


def test_unset_is_not_none() -> None:
    assert UNSET is not None
    assert repr(_core.UNSET) == "keyward.UNSET"
