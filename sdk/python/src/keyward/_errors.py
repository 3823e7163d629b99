"""Everything a call can fail with.

Every exception this package raises on purpose is a :class:`KeywardError`. Branch on the
exception class (or on :attr:`APIError.code`), never on the message: codes are the stable part
of Keyward's contract, messages are for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Type

__all__ = [
    "APIError",
    "BadGateway",
    "ConnectionError",
    "CredentialsFileError",
    "DecodeError",
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
    "KeyLimitReached",
    "KeywardError",
    "MissingCredentials",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "SessionRequired",
    "TokenExpired",
    "Unavailable",
    "UsageExceeded",
    "ValidationFailed",
]


class KeywardError(Exception):
    """The base of every exception raised by this package."""


class ConnectionError(KeywardError):
    """The request did not complete: connection refused, timeout, TLS failure, etc.

    This is ``keyward.ConnectionError``, not the builtin of the same name: catch it as
    ``keyward.ConnectionError`` (or :class:`KeywardError`).

    Attributes:
        url: The URL that could not be reached (never carries a credential: those travel in
            headers only).
        reason: What went wrong, as the HTTP library put it.

    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"request to {url} failed: {reason}")


class DecodeError(KeywardError):
    """The server answered, but not with the JSON this package expected.

    For instance an HTML error page from a proxy in front of Keyward, or a field of the wrong
    type.

    Attributes:
        status: The HTTP status of the answer.
        request_id: The ``X-Request-Id`` header of the answer, when there was one.

    """

    def __init__(self, status: int, request_id: Optional[str], reason: str) -> None:
        self.status = status
        self.request_id = request_id
        suffix = f" [request {request_id}]" if request_id else ""
        super().__init__(f"could not decode the {status} response: {reason}{suffix}")


class CredentialsFileError(KeywardError):
    """The credentials file cannot be read, parsed or written.

    Attributes:
        path: The file.

    """

    def __init__(self, path: Optional[Path], reason: str) -> None:
        self.path = path
        super().__init__(reason)


@dataclass(frozen=True)
class FieldError:
    """One invalid field of a :class:`ValidationFailed` error.

    Attributes:
        field: The field's name, e.g. ``"name"`` or ``"current_password"``.
        message: What is wrong with it.

    """

    field: str
    message: str


class APIError(KeywardError):
    """The server answered with an RFC 9457 problem (``application/problem+json``).

    Each error code of the API has its own subclass (:class:`NotFound` for ``not_found``…);
    a code newer than this package is an :class:`APIError` itself, with its ``code`` intact.

    Attributes:
        status: The HTTP status, e.g. ``401``.
        code: The stable error code, e.g. ``"invalid_api_key"``.
        message: The problem's ``detail``: a sentence for people.
        request_id: The request id (``req_…``), for support requests and log searches.

    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: Optional[str] = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        suffix = f" [request {request_id}]" if request_id else ""
        super().__init__(f"{code} ({status}): {message}{suffix}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )


class InvalidRequest(APIError):
    """400 ``invalid_request``: the body is not a JSON object sent as ``application/json``."""


class MissingCredentials(APIError):
    """401 ``missing_credentials``: the call needs an API key or a session, and had none."""


class InvalidToken(APIError):
    """401 ``invalid_token``: the access or refresh token is malformed, revoked or spent."""


class TokenExpired(APIError):
    """401 ``token_expired``: the access token is past its lifetime.

    Clients refresh and retry by themselves; this reaches you only when that was impossible
    (no refresh token) or the refresh failed.
    """


class InvalidAPIKey(APIError):
    """401 ``invalid_api_key``: the API key is malformed, unknown, expired, revoked or disabled."""


class InvalidCredentials(APIError):
    """401 ``invalid_credentials``: the email or the password is wrong."""


class InsufficientScope(APIError):
    """403 ``insufficient_scope``: the API key lacks a scope the call needs."""


class SessionRequired(APIError):
    """403 ``session_required``: an account operation that an API key may not do."""


class Forbidden(APIError):
    """403 ``forbidden``: anything else not allowed, e.g. a disabled account."""


class NotFound(APIError):
    """404 ``not_found``: no such route or resource, or a resource of another user or tenant."""


class EmailTaken(APIError):
    """409 ``email_taken``: registration with an email already in use."""


class KeyLimitReached(APIError):
    """409 ``key_limit_reached``: the user already has as many active keys as allowed."""


class PayloadTooLarge(APIError):
    """413 ``payload_too_large``: the request body is over the server's limit."""


class ValidationFailed(APIError):
    """422 ``validation_failed``: fields are missing, of the wrong type or invalid.

    Attributes:
        errors: One :class:`FieldError` per invalid field.

    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: Optional[str] = None,
        errors: Optional[List[FieldError]] = None,
    ) -> None:
        super().__init__(status, code, message, request_id)
        self.errors: List[FieldError] = list(errors or [])

    def __str__(self) -> str:
        fields = "; ".join(f"{error.field}: {error.message}" for error in self.errors)
        return f"{super().__str__()} ({fields})" if fields else super().__str__()


class RateLimited(APIError):
    """429 ``rate_limited``: too many requests; try again later.

    Attributes:
        retry_after: Seconds to wait before trying again, from the ``Retry-After`` header, or
            ``None`` when the server did not say.

    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: Optional[str] = None,
        retry_after: Optional[int] = None,
    ) -> None:
        super().__init__(status, code, message, request_id)
        self.retry_after = retry_after


class UsageExceeded(APIError):
    """429 ``usage_exceeded``: the API key has no credits left."""


class Internal(APIError):
    """500 ``internal``: the server failed; its logs have the cause under the request id."""


class BadGateway(APIError):
    """502 ``bad_gateway``: the gateway's upstream refused the connection or is unreachable."""


class GatewayTimeout(APIError):
    """504 ``gateway_timeout``: the gateway's upstream did not answer in time."""


class Unavailable(APIError):
    """503 ``unavailable``: the server cannot reach its database."""


_BY_CODE: Dict[str, Type[APIError]] = {
    "invalid_request": InvalidRequest,
    "missing_credentials": MissingCredentials,
    "invalid_token": InvalidToken,
    "token_expired": TokenExpired,
    "invalid_api_key": InvalidAPIKey,
    "invalid_credentials": InvalidCredentials,
    "insufficient_scope": InsufficientScope,
    "session_required": SessionRequired,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "email_taken": EmailTaken,
    "key_limit_reached": KeyLimitReached,
    "payload_too_large": PayloadTooLarge,
    "validation_failed": ValidationFailed,
    "rate_limited": RateLimited,
    "usage_exceeded": UsageExceeded,
    "internal": Internal,
    "bad_gateway": BadGateway,
    "gateway_timeout": GatewayTimeout,
    "unavailable": Unavailable,
}


def api_error(
    status: int,
    problem: Mapping[str, object],
    header_request_id: Optional[str],
    retry_after_header: Optional[str],
) -> APIError:
    """The exception for a problem body: the subclass of its ``code``, else :class:`APIError`.

    ``problem`` must hold a string ``code``; every other member is optional.
    """
    code = str(problem["code"])
    detail = problem.get("detail")
    title = problem.get("title")
    message = detail if isinstance(detail, str) else title if isinstance(title, str) else ""
    body_request_id = problem.get("request_id")
    request_id = body_request_id if isinstance(body_request_id, str) else header_request_id
    cls = _BY_CODE.get(code, APIError)
    if cls is ValidationFailed:
        return ValidationFailed(status, code, message, request_id, _field_errors(problem))
    if cls is RateLimited:
        return RateLimited(status, code, message, request_id, _seconds(retry_after_header))
    return cls(status, code, message, request_id)


def _field_errors(problem: Mapping[str, object]) -> List[FieldError]:
    raw = problem.get("errors")
    if not isinstance(raw, list):
        return []
    return [
        FieldError(field=str(item.get("field", "")), message=str(item.get("message", "")))
        for item in raw
        if isinstance(item, dict)
    ]


def _seconds(header: Optional[str]) -> Optional[int]:
    """``Retry-After`` as whole seconds; ``None`` when absent or not a number of seconds."""
    if header is None:
        return None
    try:
        seconds = int(header.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
