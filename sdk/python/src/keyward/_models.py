"""The typed results of the API: frozen dataclasses parsed from the server's JSON.

Parsing is lenient the way a long-lived client must be: members this package does not know
are ignored, and optional members the server does not send yet take their documented default.
Timestamps stay the RFC 3339 UTC strings the server sends (``"2026-11-22T10:00:00Z"``) and
dates ``YYYY-MM-DD`` strings; convert them with :func:`datetime.datetime.fromisoformat` (on
Python 3.9 and 3.10, replace the trailing ``Z`` by ``+00:00`` first).

Secrets (a new API key, tokens, a webhook's signing secret) are plain ``str`` attributes
left out of ``repr()``, so printing a result or logging it never shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type, TypeVar, Union

__all__ = [
    "AuthInfo",
    "CreatedKey",
    "CreatedWebhook",
    "Credits",
    "CreditsRefill",
    "DeliveryAttempt",
    "Key",
    "Me",
    "RateLimit",
    "Registration",
    "Tenant",
    "TokenPair",
    "Usage",
    "UsageDay",
    "User",
    "Verification",
    "VerifyCredits",
    "VerifyRateLimit",
    "Webhook",
    "WebhookDelivery",
]

JSONObject = Dict[str, Any]
"""A JSON object as :mod:`json` decodes it (``meta`` fields, for one)."""


class Malformed(Exception):
    """A JSON answer that does not have the shape this package expects; the reason says why."""


_T = TypeVar("_T")


class _Fields:
    """Typed access to the members of one JSON object, for the parsers below.

    A required member that is missing or of the wrong type raises :class:`Malformed`; an
    optional member that is missing or ``null`` is ``None``.
    """

    def __init__(self, value: object, what: str) -> None:
        if not isinstance(value, dict):
            raise Malformed(f"{what} is not a JSON object")
        self._value: Mapping[str, object] = value
        self._what = what

    def _get(self, name: str, kinds: Tuple[Type[Any], ...], required: bool) -> Any:  # noqa: ANN401
        # Any: each caller annotates the value with the type it asked to be checked.
        value = self._value.get(name)
        if value is None:
            if required:
                raise Malformed(f"{self._what} has no {name!r}")
            return None
        # A JSON true is a Python int too, but never a count.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(kind.__name__ for kind in kinds)
            raise Malformed(f"{self._what}.{name} is not a {expected}")
        return value

    def text(self, name: str) -> str:
        value: str = self._get(name, (str,), True)
        return value

    def opt_text(self, name: str) -> Optional[str]:
        value: Optional[str] = self._get(name, (str,), False)
        return value

    def integer(self, name: str) -> int:
        value: int = self._get(name, (int,), True)
        return value

    def opt_integer(self, name: str) -> Optional[int]:
        value: Optional[int] = self._get(name, (int,), False)
        return value

    def opt_number(self, name: str) -> Optional[float]:
        value: Optional[Union[int, float]] = self._get(name, (int, float), False)
        return None if value is None else float(value)

    def flag(self, name: str, default: Optional[bool] = None) -> bool:
        value: Optional[bool] = self._get(name, (bool,), default is None)
        return bool(default) if value is None else value

    def texts(self, name: str) -> List[str]:
        items = self.items(name)
        if not all(isinstance(item, str) for item in items):
            raise Malformed(f"{self._what}.{name} is not a list of strings")
        return [str(item) for item in items]

    def opt_texts(self, name: str) -> Optional[List[str]]:
        return None if self._value.get(name) is None else self.texts(name)

    def items(self, name: str, required: bool = False) -> List[object]:
        """The list ``name``; unless ``required``, a missing or ``null`` list is empty."""
        value: Optional[List[object]] = self._get(name, (list,), required)
        return [] if value is None else list(value)

    def opt_object(self, name: str) -> Optional[JSONObject]:
        value: Optional[JSONObject] = self._get(name, (dict,), False)
        return None if value is None else dict(value)

    def child(self, name: str) -> _Fields:
        return _Fields(self._get(name, (dict,), True), f"{self._what}.{name}")

    def opt_child(self, name: str) -> Optional[_Fields]:
        value = self._get(name, (dict,), False)
        return None if value is None else _Fields(value, f"{self._what}.{name}")

    def children(self, name: str) -> List[_Fields]:
        return [
            _Fields(item, f"{self._what}.{name}[{i}]") for i, item in enumerate(self.items(name))
        ]


def fields(value: object, what: str) -> _Fields:
    """Reader of the JSON object ``value`` (named ``what`` in error messages)."""
    return _Fields(value, what)


# Each result class reads itself: ``_parse(value)`` from a whole answer's JSON, or
# ``_read(fields)`` from an object nested in one.


# ---------------------------------------------------------------- accounts and sessions


@dataclass(frozen=True)
class User:
    """A user account.

    Attributes:
        id: The user's id (``usr_…``).
        email: The email, lower-cased.
        name: The display name given at registration, if any.

    """

    id: str
    email: str
    name: Optional[str]

    @classmethod
    def _read(cls, f: _Fields) -> User:
        return cls(id=f.text("id"), email=f.text("email"), name=f.opt_text("name"))


@dataclass(frozen=True)
class Tenant:
    """A tenant: the organization every key and session belongs to.

    Attributes:
        id: The tenant's id (``ten_…``).
        name: Its name.
        created_at: When it was created; ``None`` where the server does not say (in
            :class:`Me`).

    """

    id: str
    name: str
    created_at: Optional[str]

    @classmethod
    def _read(cls, f: _Fields) -> Tenant:
        return cls(id=f.text("id"), name=f.text("name"), created_at=f.opt_text("created_at"))


@dataclass(frozen=True)
class AuthInfo:
    """How the caller authenticated.

    Attributes:
        method: ``"session"`` (a login's access token) or ``"api_key"``.
        key_id: The API key's id when ``method`` is ``"api_key"``.
        scopes: The scopes the credential holds (``["admin"]`` for a session).

    """

    method: str
    key_id: Optional[str]
    scopes: List[str]

    @classmethod
    def _read(cls, f: _Fields) -> AuthInfo:
        return cls(method=f.text("method"), key_id=f.opt_text("key_id"), scopes=f.texts("scopes"))


@dataclass(frozen=True)
class Me:
    """Who the client's credentials belong to: the answer of ``GET /v1/auth/me``.

    Attributes:
        user: The user.
        tenant: The user's tenant.
        auth: How the credentials authenticate.

    """

    user: User
    tenant: Tenant
    auth: AuthInfo

    @property
    def email(self) -> str:
        """The user's email."""
        return self.user.email

    @property
    def tenant_name(self) -> str:
        """The tenant's name."""
        return self.tenant.name

    @classmethod
    def _parse(cls, value: object) -> Me:
        f = fields(value, "me")
        return cls(
            user=User._read(f.child("user")),
            tenant=Tenant._read(f.child("tenant")),
            auth=AuthInfo._read(f.child("auth")),
        )


@dataclass(frozen=True)
class TokenPair:
    """A session's tokens, as a login, registration or refresh returns them.

    The client keeps them by itself; you rarely need them. Neither token appears in
    ``repr()``.

    Attributes:
        access_token: The short-lived JWT presented as ``Authorization: Bearer``.
        refresh_token: The single-use token that buys the next pair.
        token_type: ``"bearer"``.
        expires_in: Seconds until ``access_token`` expires.

    """

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    token_type: str
    expires_in: int

    @classmethod
    def _read(cls, f: _Fields) -> TokenPair:
        return cls(
            access_token=f.text("access_token"),
            refresh_token=f.text("refresh_token"),
            token_type=f.opt_text("token_type") or "bearer",
            expires_in=f.integer("expires_in"),
        )


# ---------------------------------------------------------------- API keys


@dataclass(frozen=True)
class RateLimit:
    """A key's rate limit: at most ``requests`` every ``per_seconds`` seconds.

    Attributes:
        requests: How many requests the window allows.
        per_seconds: The window's length in seconds.

    """

    requests: int
    per_seconds: int

    def _json(self) -> JSONObject:
        return {"requests": self.requests, "per_seconds": self.per_seconds}

    @classmethod
    def _read(cls, f: _Fields) -> RateLimit:
        return cls(requests=f.integer("requests"), per_seconds=f.integer("per_seconds"))


@dataclass(frozen=True)
class CreditsRefill:
    """How a key's credits come back.

    Attributes:
        amount: ``remaining`` is set to this at each refill.
        interval: ``"daily"`` (00:00 UTC) or ``"monthly"`` (the 1st, 00:00 UTC).

    """

    amount: int
    interval: str

    @classmethod
    def _read(cls, f: _Fields) -> CreditsRefill:
        return cls(amount=f.integer("amount"), interval=f.text("interval"))


@dataclass(frozen=True)
class Credits:
    """A key's usage credits: each verification spends its ``cost`` (default 1).

    Attributes:
        remaining: Credits left; at zero, verification answers ``USAGE_EXCEEDED``.
        refill: The automatic refill, or ``None`` for none.

    """

    remaining: int
    refill: Optional[CreditsRefill] = None

    def _json(self) -> JSONObject:
        refill = self.refill
        return {
            "remaining": self.remaining,
            "refill": None
            if refill is None
            else {"amount": refill.amount, "interval": refill.interval},
        }

    @classmethod
    def _read(cls, f: _Fields) -> Credits:
        refill = f.opt_child("refill")
        return cls(
            remaining=f.integer("remaining"),
            refill=None if refill is None else CreditsRefill._read(refill),
        )


@dataclass(frozen=True)
class Key:
    """An API key as listed: never the key itself (see :class:`CreatedKey`).

    Attributes:
        id: The key's id (``key_…``).
        name: Its name.
        description: Its description, if any.
        scopes: Its scopes, e.g. ``["read"]``.
        masked: ``start`` + ``…`` + ``end``, to show the key without revealing it.
        start: The key's first 8 characters.
        end: The key's last 4 characters.
        created_at: When it was created.
        expires_at: When it expires; ``None`` for never.
        last_used_at: When it was last used (updated at most once a minute); ``None`` if never.
        status: ``"active"``, ``"expired"`` or ``"revoked"``.
        meta: The JSON object given at creation, returned by verification.
        enabled: ``False`` while the key is disabled (it then verifies as ``DISABLED``).
        rate_limit: Its rate limit, or ``None``.
        credits: Its usage credits, or ``None`` for unlimited.

    """

    id: str
    name: str
    description: Optional[str]
    scopes: List[str]
    masked: str
    start: str
    end: str
    created_at: str
    expires_at: Optional[str]
    last_used_at: Optional[str]
    status: str
    meta: Optional[JSONObject]
    enabled: bool
    rate_limit: Optional[RateLimit]
    credits: Optional[Credits]

    @classmethod
    def _members(cls, f: _Fields) -> Dict[str, Any]:
        rate_limit = f.opt_child("rate_limit")
        credits = f.opt_child("credits")
        return {
            "id": f.text("id"),
            "name": f.text("name"),
            "description": f.opt_text("description"),
            "scopes": f.texts("scopes"),
            "masked": f.text("masked"),
            "start": f.text("start"),
            "end": f.text("end"),
            "created_at": f.text("created_at"),
            "expires_at": f.opt_text("expires_at"),
            "last_used_at": f.opt_text("last_used_at"),
            "status": f.text("status"),
            "meta": f.opt_object("meta"),
            "enabled": f.flag("enabled", default=True),
            "rate_limit": None if rate_limit is None else RateLimit._read(rate_limit),
            "credits": None if credits is None else Credits._read(credits),
        }

    @classmethod
    def _parse(cls, value: object) -> Key:
        return cls(**cls._members(fields(value, "key")))


@dataclass(frozen=True)
class CreatedKey(Key):
    """A key as created or rotated: the only time the full key is shown.

    Attributes:
        key: The full API key. Save it now: it cannot be retrieved again. Not in ``repr()``.

    """

    key: str = field(repr=False)

    @classmethod
    def _parse(cls, value: object) -> CreatedKey:
        f = fields(value, "key")
        return cls(**cls._members(f), key=f.text("key"))


@dataclass(frozen=True)
class Registration:
    """What a registration returns: the new user, their tenant and a session.

    Attributes:
        user: The new user.
        tenant: Their new tenant, which they own.
        tokens: The session's token pair (the client already holds it).
        api_key: A first API key, when the server is set to mint one at registration.

    """

    user: User
    tenant: Tenant
    tokens: TokenPair
    api_key: Optional[CreatedKey]

    @classmethod
    def _parse(cls, value: object) -> Registration:
        f = fields(value, "registration")
        api_key = f.opt_object("api_key")
        return cls(
            user=User._read(f.child("user")),
            tenant=Tenant._read(f.child("tenant")),
            tokens=TokenPair._read(f),
            api_key=None if api_key is None else CreatedKey._parse(api_key),
        )


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerifyRateLimit:
    """The state of a key's rate limit after a verification.

    Attributes:
        limit: Requests allowed per window.
        remaining: Requests left in the current window.
        reset: Seconds until the window resets.

    """

    limit: int
    remaining: int
    reset: int

    @classmethod
    def _read(cls, f: _Fields) -> VerifyRateLimit:
        return cls(
            limit=f.integer("limit"), remaining=f.integer("remaining"), reset=f.integer("reset")
        )


@dataclass(frozen=True)
class VerifyCredits:
    """A key's credits after a verification.

    Attributes:
        remaining: Credits left.

    """

    remaining: int

    @classmethod
    def _read(cls, f: _Fields) -> VerifyCredits:
        return cls(remaining=f.integer("remaining"))


@dataclass(frozen=True)
class Verification:
    """The answer of ``POST /v1/keys/verify``.

    An unknown, expired, revoked or otherwise refused key is an answer with ``valid=False``
    and its ``code``, not an exception.

    Attributes:
        valid: Whether the key may be used for the scopes asked.
        code: ``"VALID"``, ``"NOT_FOUND"``, ``"EXPIRED"``, ``"REVOKED"``,
            ``"INSUFFICIENT_SCOPE"``, ``"DISABLED"``, ``"RATE_LIMITED"`` or
            ``"USAGE_EXCEEDED"`` (kept as sent, so a newer code still arrives).
        key_id: The key's id, when it was found.
        tenant_id: Its tenant's id, when it was found.
        user_id: Its owner's id, when it was found.
        scopes: Its scopes, when it was found.
        expires_at: When it expires (``None`` for never, or when it was not found).
        meta: The key's ``meta`` object, when it was found.
        rate_limit: The key's rate-limit state, when it has a rate limit.
        credits: The key's remaining credits, when it has credits.

    """

    valid: bool
    code: str
    key_id: Optional[str]
    tenant_id: Optional[str]
    user_id: Optional[str]
    scopes: Optional[List[str]]
    expires_at: Optional[str]
    meta: Optional[JSONObject]
    rate_limit: Optional[VerifyRateLimit]
    credits: Optional[VerifyCredits]

    @classmethod
    def _parse(cls, value: object) -> Verification:
        f = fields(value, "verification")
        rate_limit = f.opt_child("rate_limit")
        credits = f.opt_child("credits")
        return cls(
            valid=f.flag("valid"),
            code=f.text("code"),
            key_id=f.opt_text("key_id"),
            tenant_id=f.opt_text("tenant_id"),
            user_id=f.opt_text("user_id"),
            scopes=f.opt_texts("scopes"),
            expires_at=f.opt_text("expires_at"),
            meta=f.opt_object("meta"),
            rate_limit=None if rate_limit is None else VerifyRateLimit._read(rate_limit),
            credits=None if credits is None else VerifyCredits._read(credits),
        )


# ---------------------------------------------------------------- usage


@dataclass(frozen=True)
class UsageDay:
    """One UTC day of usage.

    Attributes:
        date: The day, ``YYYY-MM-DD``.
        total: Metered requests that day, in flight included.
        succeeded: Requests that succeeded.
        failed: Requests rejected, or whose upstream failed.
        in_flight: Requests not finished yet.

    """

    date: str
    total: int
    succeeded: int
    failed: int
    in_flight: int

    @classmethod
    def _read(cls, f: _Fields) -> UsageDay:
        return cls(
            date=f.text("date"),
            total=f.integer("total"),
            succeeded=f.integer("succeeded"),
            failed=f.integer("failed"),
            in_flight=f.integer("in_flight"),
        )


@dataclass(frozen=True)
class Usage:
    """Metered requests (verifications and gateway requests) over a range of UTC days.

    Attributes:
        from_date: The first day, ``YYYY-MM-DD`` (the JSON member ``from``).
        to_date: The last day, today (the JSON member ``to``).
        executions: Metered requests in the range.
        succeeded: Of which succeeded.
        failed: Of which failed.
        in_flight: Of which not finished yet.
        success_rate: Succeeded / completed, 0 to 1; ``None`` when nothing completed.
        avg_duration_ms: Mean duration of completed requests; ``None`` when nothing completed.
        days: One entry per day, oldest first, zero days included.

    """

    from_date: str
    to_date: str
    executions: int
    succeeded: int
    failed: int
    in_flight: int
    success_rate: Optional[float]
    avg_duration_ms: Optional[float]
    days: List[UsageDay]

    @classmethod
    def _parse(cls, value: object) -> Usage:
        f = fields(value, "usage")
        return cls(
            from_date=f.text("from"),
            to_date=f.text("to"),
            executions=f.integer("executions"),
            succeeded=f.integer("succeeded"),
            failed=f.integer("failed"),
            in_flight=f.integer("in_flight"),
            success_rate=f.opt_number("success_rate"),
            avg_duration_ms=f.opt_number("avg_duration_ms"),
            days=[UsageDay._read(day) for day in f.children("days")],
        )


# ---------------------------------------------------------------- webhooks


@dataclass(frozen=True)
class Webhook:
    """A webhook endpoint.

    Attributes:
        id: The webhook's id.
        url: Where deliveries are POSTed.
        events: The events it receives, e.g. ``["key.created", "key.revoked"]``.
        created_at: When it was created, when the server says.

    """

    id: str
    url: str
    events: List[str]
    created_at: Optional[str]

    @classmethod
    def _members(cls, f: _Fields) -> Dict[str, Any]:
        return {
            "id": f.text("id"),
            "url": f.text("url"),
            "events": f.texts("events"),
            "created_at": f.opt_text("created_at"),
        }

    @classmethod
    def _parse(cls, value: object) -> Webhook:
        return cls(**cls._members(fields(value, "webhook")))


@dataclass(frozen=True)
class CreatedWebhook(Webhook):
    """A webhook as created: the only time its signing secret is shown.

    Attributes:
        secret: The secret that signs deliveries (Standard Webhooks ``webhook-signature``).
            Save it now. Not in ``repr()``.

    """

    secret: str = field(repr=False)

    @classmethod
    def _parse(cls, value: object) -> CreatedWebhook:
        f = fields(value, "webhook")
        return cls(**cls._members(f), secret=f.text("secret"))


@dataclass(frozen=True)
class DeliveryAttempt:
    """One attempt at delivering a webhook event.

    Attributes:
        at: When the attempt was made.
        status_code: The HTTP status the endpoint answered; ``None`` when it did not answer.
        error: Why the attempt failed, when it did.
        duration_ms: How long the attempt took, in milliseconds.

    """

    at: str
    status_code: Optional[int]
    error: Optional[str]
    duration_ms: Optional[float]

    @classmethod
    def _read(cls, f: _Fields) -> DeliveryAttempt:
        return cls(
            at=f.text("at"),
            status_code=f.opt_integer("status_code"),
            error=f.opt_text("error"),
            duration_ms=f.opt_number("duration_ms"),
        )


@dataclass(frozen=True)
class WebhookDelivery:
    """One event queued for a webhook, with its delivery attempts.

    Attributes:
        id: The delivery's id (its ``webhook-id`` header).
        event: The event, e.g. ``"key.created"``.
        status: ``"pending"``, ``"delivered"`` or ``"failed"`` (retries exhausted).
        created_at: When the event was queued.
        next_attempt_at: When the next attempt is due, while ``pending``.
        attempts: The attempts made so far, oldest first.

    """

    id: str
    event: str
    status: str
    created_at: str
    next_attempt_at: Optional[str]
    attempts: List[DeliveryAttempt]

    @classmethod
    def _parse(cls, value: object) -> WebhookDelivery:
        f = fields(value, "delivery")
        return cls(
            id=f.text("id"),
            event=f.text("event"),
            status=f.text("status"),
            created_at=f.text("created_at"),
            next_attempt_at=f.opt_text("next_attempt_at"),
            attempts=[DeliveryAttempt._read(item) for item in f.children("attempts")],
        )


def parse_list(value: object, member: str, parse: Callable[[object], _T]) -> List[_T]:
    """The items of the list ``value[member]`` (a required member), each parsed by ``parse``."""
    return [parse(item) for item in fields(value, "answer").items(member, required=True)]


def rate_limit_json(value: Union[RateLimit, None]) -> Optional[JSONObject]:
    """The JSON of a rate limit in a request (``None`` stays ``null``: no limit)."""
    return None if value is None else value._json()


def credits_json(value: Union[Credits, None]) -> Optional[JSONObject]:
    """The JSON of credits in a request (``None`` stays ``null``: unlimited)."""
    return None if value is None else value._json()
