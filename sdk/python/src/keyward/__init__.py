"""Keyward: the Python client of the Keyward authentication service.

A sync :class:`Client` and an async :class:`AsyncClient` with the same methods::

    import keyward

    client = keyward.Client.from_env()          # KEYWARD_URL / KEYWARD_API_KEY, or the CLI's file
    print(client.whoami().email)
    created = client.keys.create("ci", scopes=["read"], expires_in_days=90)
    print(created.key)                          # shown once

Every failure is a :class:`KeywardError`; an answer of the server with an error code is an
:class:`APIError` subclass named after the code (:class:`NotFound`, :class:`RateLimited`…).
"""

from __future__ import annotations

from ._async import AsyncClient, AsyncKeys, AsyncWebhooks
from ._core import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, UNSET, Unset, __version__, set_key
from ._credentials import Credentials, credentials_path
from ._errors import (
    APIError,
    BadGateway,
    ConnectionError,
    CredentialsFileError,
    DecodeError,
    EmailTaken,
    FieldError,
    Forbidden,
    GatewayTimeout,
    InsufficientScope,
    Internal,
    InvalidAPIKey,
    InvalidCredentials,
    InvalidRequest,
    InvalidToken,
    KeyLimitReached,
    KeywardError,
    MissingCredentials,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SessionRequired,
    TokenExpired,
    Unavailable,
    UsageExceeded,
    ValidationFailed,
)
from ._models import (
    AuthInfo,
    CreatedKey,
    CreatedWebhook,
    Credits,
    CreditsRefill,
    DeliveryAttempt,
    Key,
    Me,
    RateLimit,
    Registration,
    Tenant,
    TokenPair,
    Usage,
    UsageDay,
    User,
    Verification,
    VerifyCredits,
    VerifyRateLimit,
    Webhook,
    WebhookDelivery,
)
from ._sync import Client, Keys, Webhooks

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "UNSET",
    "APIError",
    "AsyncClient",
    "AsyncKeys",
    "AsyncWebhooks",
    "AuthInfo",
    "BadGateway",
    "Client",
    "ConnectionError",
    "CreatedKey",
    "CreatedWebhook",
    "Credentials",
    "CredentialsFileError",
    "Credits",
    "CreditsRefill",
    "DecodeError",
    "DeliveryAttempt",
    "EmailTaken",
    "FieldError",
    "Forbidden",
    "GatewayTimeout",
    "InsufficientScope",
    "Internal",
    "InvalidAPIKey",
    "InvalidCredentials",
    "InvalidRequest",
    "InvalidToken",
    "Key",
    "KeyLimitReached",
    "Keys",
    "KeywardError",
    "Me",
    "MissingCredentials",
    "NotFound",
    "PayloadTooLarge",
    "RateLimit",
    "RateLimited",
    "Registration",
    "SessionRequired",
    "Tenant",
    "TokenExpired",
    "TokenPair",
    "Unavailable",
    "Unset",
    "Usage",
    "UsageDay",
    "UsageExceeded",
    "User",
    "ValidationFailed",
    "Verification",
    "VerifyCredits",
    "VerifyRateLimit",
    "Webhook",
    "WebhookDelivery",
    "Webhooks",
    "__version__",
    "credentials_path",
    "set_key",
]


def _publish() -> None:
    """Shows the public classes as ``keyward.X`` (in tracebacks), not under a private module."""
    for name in __all__:
        value = globals()[name]
        if isinstance(value, type):
            value.__module__ = __name__


_publish()
