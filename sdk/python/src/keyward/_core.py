"""The protocol, once, for the sync and the async client: a sans-IO core.

Every API call is an *operation*: a generator that yields :class:`httpx.Request` objects and
is sent back the :class:`httpx.Response` for each, then returns the call's result. It builds
the requests, parses the answers, maps errors, refreshes and retries on ``token_expired`` and
keeps the credentials file up to date. It performs no I/O on the network itself: a *driver*
(:class:`keyward.Client` or :class:`keyward.AsyncClient`) sends the requests, with httpx's
sync or async client, and runs the nested operations an operation yields as
:class:`Exclusive` while holding its refresh lock.

A failure of the driver (a :class:`~keyward.ConnectionError`) is thrown into the operation at
the ``yield`` that asked for the request, so operations handle it like any other exception.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Generic,
    List,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
    Union,
    cast,
)
from urllib.parse import quote, urlsplit

import httpx

from . import _credentials
from ._credentials import Credentials, StoredCredentials, credentials_path
from ._errors import (
    APIError,
    ConnectionError,
    CredentialsFileError,
    DecodeError,
    KeywardError,
    api_error,
)
from ._models import (
    CreatedKey,
    CreatedWebhook,
    Credits,
    JSONObject,
    Key,
    Malformed,
    Me,
    RateLimit,
    Registration,
    Tenant,
    TokenPair,
    Usage,
    Verification,
    Webhook,
    WebhookDelivery,
    credits_json,
    fields,
    parse_list,
    rate_limit_json,
)

__version__ = "0.1.0"

DEFAULT_BASE_URL = "http://127.0.0.1:7777"
"""Where :meth:`keyward.Client.from_env` connects by default: ``keyward serve``'s address."""

DEFAULT_TIMEOUT = 30.0
"""Seconds a request may take, connecting included, unless the client is told otherwise."""

USER_AGENT = f"keyward-python/{__version__}"

_T = TypeVar("_T")


class Unset(enum.Enum):
    """The type of :data:`UNSET`."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "keyward.UNSET"


UNSET = Unset.UNSET
"""The default of :meth:`keyward.Client.keys.update`'s arguments: "leave this field as it is".

It differs from ``None``, which clears a field (``rate_limit=None`` removes the rate limit).
"""


@dataclass(frozen=True)
class Exclusive(Generic[_T]):
    """An effect: run ``operation`` while holding the client's refresh lock, send its result."""

    operation: Operation[_T]


Effect = Union[httpx.Request, Exclusive[Any]]
"""What an operation asks its driver for."""

Operation = Generator[Effect, object, _T]
"""An API call, as a generator of the requests it needs (see the module's docstring)."""


@dataclass(frozen=True)
class Done(Generic[_T]):
    """An operation's result, once it returned."""

    value: _T


def advance(
    operation: Operation[_T], sent: object, error: Optional[KeywardError]
) -> Union[Effect, Done[_T]]:
    """Resumes ``operation`` with the result of its last effect, or the error that effect raised.

    Returns the operation's next effect, or :class:`Done` with its result.
    """
    try:
        return operation.send(sent) if error is None else operation.throw(error)
    except StopIteration as stop:
        return Done(cast(_T, stop.value))


def connection_error(request: httpx.Request, error: httpx.TransportError) -> ConnectionError:
    """The :class:`keyward.ConnectionError` for a request httpx could not complete."""
    if isinstance(error, httpx.TimeoutException):
        reason = f"timed out ({type(error).__name__})"
    else:
        reason = str(error) or type(error).__name__
    return ConnectionError(str(request.url), reason)


# ---------------------------------------------------------------- configuration


_process_api_key: Optional[str] = None


def set_key(key: str, persist: bool = True, *, base_url: Optional[str] = None) -> None:
    """Make ``key`` the API key of this process, and with ``persist`` store it for later runs.

    Clients created afterwards without an ``api_key`` argument (``keyward.Client(base_url=…)``
    and :meth:`keyward.Client.from_env`) authenticate with ``key``; it takes precedence over
    ``KEYWARD_API_KEY`` and the credentials file.

    With ``persist`` (the default), ``key`` is also written to the credentials file the
    ``keyward`` CLI uses (:func:`keyward.credentials_path`), for the server at ``base_url``,
    else ``$KEYWARD_URL``, else the URL the file already names, else ``DEFAULT_BASE_URL``.
    The file then holds this key only: a session stored there before is forgotten, not
    revoked (call :meth:`keyward.Client.logout` first to end it).

    The key is not checked here; ``keyward.Client.from_env().whoami()`` does that.

    Raises:
        ValueError: ``key`` is empty, or ``base_url`` is not an http(s) URL.
        CredentialsFileError: The file cannot be written, or no location for it is known.

    """
    global _process_api_key  # noqa: PLW0603 - the process-wide key is this function's purpose
    key = key.strip()
    if not key:
        raise ValueError("set_key needs an API key, and this one is empty")
    if persist:
        path = _required_path()
        url = base_url or _env("KEYWARD_URL") or _stored_url(path) or DEFAULT_BASE_URL
        stored = StoredCredentials(url=check_base_url(url), credentials=Credentials(api_key=key))
        _credentials.save(path, stored)
    _process_api_key = key


def _env(name: str) -> Optional[str]:
    """The environment variable ``name``, stripped; ``None`` when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or None


def _stored_url(path: Path) -> Optional[str]:
    """The URL the credentials file at ``path`` names, if it exists and can be read."""
    stored = _stored_or_none(path)
    return None if stored is None else stored.url


def _required_path() -> Path:
    path = credentials_path()
    if path is None:
        raise CredentialsFileError(
            None,
            "nowhere to keep the credentials file: set KEYWARD_CONFIG_DIR, XDG_CONFIG_HOME or HOME",
        )
    return path


def check_base_url(raw: str) -> str:
    """``raw`` as a base URL (no trailing slash), or ``ValueError`` saying what is wrong.

    The messages never repeat the URL: a credential pasted in the wrong place stays out of
    logs.
    """
    text = raw.strip()
    parts = urlsplit(text)
    if "@" in parts.netloc:
        raise ValueError("base_url must not contain credentials (user:password@)")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError("base_url must not have a query (?…) or a fragment (#…)")
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(
            "base_url must be an http:// or https:// URL, such as https://auth.example.com"
        )
    return text.rstrip("/")


def _segment(key_id: str) -> str:
    """``key_id`` as one percent-encoded path segment."""
    if key_id in ("", ".", ".."):
        raise ValueError(f"{key_id!r} is not an id")
    return quote(key_id, safe="")


# ---------------------------------------------------------------- answers


def _request_id(response: httpx.Response) -> Optional[str]:
    request_id: Optional[str] = response.headers.get("x-request-id")
    return request_id


def _json(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        content_type = response.headers.get("content-type") or "no content type"
        raise DecodeError(
            response.status_code, _request_id(response), f"the body is not JSON ({content_type})"
        ) from None


def _decoded(response: httpx.Response, parse: Callable[[object], _T]) -> _T:
    """The 2xx ``response``'s JSON, parsed by ``parse``."""
    try:
        return parse(_json(response))
    except Malformed as error:
        raise DecodeError(response.status_code, _request_id(response), str(error)) from None


def _problem(response: httpx.Response) -> Optional[Dict[str, object]]:
    """The problem body of an error answer: a JSON object with a string ``code``."""
    try:
        problem = response.json()
    except ValueError:
        return None
    if isinstance(problem, dict) and isinstance(problem.get("code"), str):
        return problem
    return None


def _error(response: httpx.Response) -> KeywardError:
    """The exception for an error answer: its :class:`APIError`, else a :class:`DecodeError`."""
    request_id = _request_id(response)
    problem = _problem(response)
    if problem is None:
        content_type = response.headers.get("content-type") or "no content type"
        return DecodeError(
            response.status_code,
            request_id,
            f"expected an application/problem+json error, got {content_type}",
        )
    return api_error(response.status_code, problem, request_id, response.headers.get("retry-after"))


def _exchange(request: httpx.Request) -> Generator[Effect, object, httpx.Response]:
    """Asks the driver to send ``request``; its response."""
    response = yield request
    if not isinstance(response, httpx.Response):
        raise TypeError(f"a driver answered a request with {type(response).__name__}")
    return response


def _exclusively(operation: Operation[_T]) -> Generator[Effect, object, _T]:
    """Asks the driver to run ``operation`` under its refresh lock; its result."""
    result = yield Exclusive(operation)
    return cast(_T, result)


# ---------------------------------------------------------------- the protocol


class Core:
    """The state of one client (server, credentials, persistence) and its operations."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        timeout: float,
        persist_path: Optional[Path] = None,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.credentials = credentials
        self.timeout = timeout
        self.persist_path = persist_path

    @classmethod
    def new(cls, base_url: str, api_key: Optional[str], timeout: float) -> Core:
        """The core of ``Client(base_url, api_key, timeout)``."""
        key = api_key.strip() if api_key is not None else _process_api_key
        return cls(base_url, Credentials(api_key=key or None), timeout)

    @classmethod
    def from_env(cls, timeout: float) -> Core:
        """The core of ``Client.from_env()``; see there."""
        path = credentials_path()
        stored = _credentials.load(path) if path is not None else None
        url = _env("KEYWARD_URL") or (stored and stored.url) or DEFAULT_BASE_URL
        key = _process_api_key or _env("KEYWARD_API_KEY")
        if key is not None:
            return cls(url, Credentials(api_key=key), timeout)
        if stored is not None and stored.is_for(url):
            return cls(url, stored.credentials, timeout, persist_path=path)
        return cls(url, Credentials(), timeout)

    def __repr__(self) -> str:
        return (
            f"base_url={self.base_url!r}, timeout={self.timeout!r}, "
            f"credentials={self.credentials!r}, persist_path={self.persist_path!r}"
        )

    # ------------------------------------------------------------ plumbing

    def _request(
        self,
        method: str,
        path: str,
        body: Optional[JSONObject] = None,
        params: Optional[Dict[str, str]] = None,
        bearer: Optional[str] = None,
    ) -> httpx.Request:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        return httpx.Request(
            method,
            self.base_url + path,
            params=params,
            json=body,
            headers=headers,
            extensions={"timeout": httpx.Timeout(self.timeout).as_dict()},
        )

    def _call(
        self,
        method: str,
        path: str,
        body: Optional[JSONObject] = None,
        params: Optional[Dict[str, str]] = None,
        auth: bool = True,
    ) -> Operation[httpx.Response]:
        """Sends a request (with the client's credential when ``auth``); its 2xx response.

        When an access token was presented and the answer is ``token_expired``, makes sure
        the client holds a newer pair (refreshing once, under the refresh lock) and retries
        once. If that is impossible, the original ``token_expired`` is raised: the caller asked
        for this request, not for a refresh.
        """
        sent = self.credentials if auth else Credentials()
        request = self._request(method, path, body, params, sent.bearer)
        response = yield from _exchange(request)
        if (
            sent.access_token is not None
            and response.status_code == 401
            and (_problem(response) or {}).get("code") == "token_expired"
            and (yield from _exclusively(self._recover(sent.access_token)))
        ):
            request = self._request(method, path, body, params, self.credentials.bearer)
            response = yield from _exchange(request)
        if response.is_error:
            raise _error(response)
        return response

    def _recover(self, expired: str) -> Operation[bool]:
        """After ``expired`` was refused: whether the client now holds a newer access token.

        Runs under the refresh lock, so that requests meeting ``token_expired`` together spend
        the refresh token once (a second spend would be refused, and outside the server's
        grace window revoke the session). A failure to write the credentials file is raised:
        the old refresh token is spent, so hiding it would lose the session at the next run.
        """
        current = self.credentials.access_token
        if current != expired:
            # Another request refreshed (or logged out) while this one was in flight.
            return current is not None
        if self.credentials.refresh_token is None:
            return False
        try:
            yield from self._refresh()
        except CredentialsFileError:
            raise
        except KeywardError:
            return self._adopt_persisted(expired)
        return True

    def _refresh(self) -> Operation[None]:
        """``POST /v1/auth/refresh``: spends the refresh token; keeps and persists the pair."""
        body = {"refresh_token": self.credentials.refresh_token}
        response = yield from _exchange(self._request("POST", "/v1/auth/refresh", body))
        if response.is_error:
            raise _error(response)
        tokens = _decoded(response, _token_pair)
        self.credentials = replace(
            self.credentials,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
        )
        self._save()

    def _adopt_persisted(self, expired: str) -> bool:
        """After a failed refresh: takes the pair another process saved, if it refreshed first.

        Two programs sharing the credentials file (a script and the CLI, say) hold the same
        refresh token; the first to refresh spends it and writes the new pair. Returns whether
        the file holds a newer access token for this server.
        """
        if self.persist_path is None:
            return False
        stored = _stored_or_none(self.persist_path)
        if stored is None or not stored.is_for(self.base_url):
            return False
        token = stored.credentials.access_token
        if token is None or token == expired:
            return False
        self.credentials = stored.credentials
        return True

    def _save(self) -> None:
        """Writes the credentials file, if the client persists."""
        if self.persist_path is not None:
            stored = StoredCredentials(url=self.base_url, credentials=self.credentials)
            _credentials.save(self.persist_path, stored)

    def _start_session(self, tokens: TokenPair, persist: bool) -> None:
        """Keeps a new session's pair in place of any credentials, and persists it if asked."""
        self.persist_path = _required_path() if persist else None
        self.credentials = Credentials(
            access_token=tokens.access_token, refresh_token=tokens.refresh_token
        )
        self._save()

    # ------------------------------------------------------------ accounts and sessions

    def register(
        self,
        email: str,
        password: str,
        name: Optional[str],
        tenant_name: Optional[str],
        persist: bool,
    ) -> Operation[Registration]:
        """``POST /v1/auth/register``."""
        body: JSONObject = {"email": email, "password": password}
        if name is not None:
            body["name"] = name
        if tenant_name is not None:
            body["tenant_name"] = tenant_name
        response = yield from self._call("POST", "/v1/auth/register", body, auth=False)
        registration = _decoded(response, Registration._parse)
        self._start_session(registration.tokens, persist)
        return registration

    def login(self, email: str, password: str, persist: bool) -> Operation[TokenPair]:
        """``POST /v1/auth/login``."""
        body: JSONObject = {"email": email, "password": password}
        response = yield from self._call("POST", "/v1/auth/login", body, auth=False)
        tokens = _decoded(response, _token_pair)
        self._start_session(tokens, persist)
        return tokens

    def logout(self, all_sessions: bool) -> Operation[None]:
        """``POST /v1/auth/logout`` when holding a session; then forgets every credential."""
        failure: Optional[KeywardError] = None
        if self.credentials.access_token is not None:
            try:
                yield from self._call("POST", "/v1/auth/logout", {"all": all_sessions})
            except APIError as error:
                # A 401: the session had already ended, so there is nothing left to revoke.
                if error.status != 401:
                    failure = error
            except KeywardError as error:
                failure = error
        self.credentials = Credentials()
        path, self.persist_path = self.persist_path, None
        if path is not None:
            stored = _stored_or_none(path)
            if stored is not None and stored.is_for(self.base_url):
                _credentials.remove(path)
        if failure is not None:
            raise failure

    def me(self) -> Operation[Me]:
        """``GET /v1/auth/me``."""
        response = yield from self._call("GET", "/v1/auth/me")
        return _decoded(response, Me._parse)

    def tenant(self) -> Operation[Tenant]:
        """``GET /v1/tenant``."""
        response = yield from self._call("GET", "/v1/tenant")
        return _decoded(response, lambda value: Tenant._read(fields(value, "tenant")))

    # ------------------------------------------------------------ API keys

    def create_key(
        self,
        name: str,
        *,
        description: Optional[str],
        expires_in_days: Optional[int],
        scopes: Optional[Sequence[str]],
        meta: Optional[JSONObject],
        rate_limit: Optional[RateLimit],
        credits: Optional[Credits],
    ) -> Operation[CreatedKey]:
        """``POST /v1/keys``."""
        body: JSONObject = {"name": name}
        optional: Dict[str, object] = {
            "description": description,
            "expires_in_days": expires_in_days,
            "scopes": None if scopes is None else list(scopes),
            "meta": meta,
            "rate_limit": rate_limit_json(rate_limit),
            "credits": credits_json(credits),
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        response = yield from self._call("POST", "/v1/keys", body)
        return _decoded(response, CreatedKey._parse)

    def list_keys(self, include_revoked: bool) -> Operation[List[Key]]:
        """``GET /v1/keys``."""
        params = {"include_revoked": "true"} if include_revoked else None
        response = yield from self._call("GET", "/v1/keys", params=params)
        return _decoded(response, lambda value: parse_list(value, "keys", Key._parse))

    def get_key(self, key_id: str) -> Operation[Key]:
        """``GET /v1/keys/{id}``."""
        response = yield from self._call("GET", f"/v1/keys/{_segment(key_id)}")
        return _decoded(response, Key._parse)

    def update_key(
        self,
        key_id: str,
        changes: Mapping[str, object],
    ) -> Operation[Key]:
        """``PATCH /v1/keys/{id}`` with the members of ``changes`` that are not :data:`UNSET`."""
        body: JSONObject = {}
        for name, value in changes.items():
            if value is UNSET:
                continue
            if isinstance(value, RateLimit):
                body[name] = rate_limit_json(value)
            elif isinstance(value, Credits):
                body[name] = credits_json(value)
            elif isinstance(value, (list, tuple)):
                body[name] = list(value)
            else:
                body[name] = value
        response = yield from self._call("PATCH", f"/v1/keys/{_segment(key_id)}", body)
        return _decoded(response, Key._parse)

    def revoke_key(self, key_id: str) -> Operation[None]:
        """``DELETE /v1/keys/{id}``."""
        yield from self._call("DELETE", f"/v1/keys/{_segment(key_id)}")

    def rotate_key(self, key_id: str, grace_period_seconds: Optional[int]) -> Operation[CreatedKey]:
        """``POST /v1/keys/{id}/rotate``."""
        body: JSONObject = {}
        if grace_period_seconds is not None:
            body["grace_period_seconds"] = grace_period_seconds
        response = yield from self._call("POST", f"/v1/keys/{_segment(key_id)}/rotate", body)
        return _decoded(response, CreatedKey._parse)

    def verify(
        self, key: str, scopes: Optional[Sequence[str]], cost: Optional[int]
    ) -> Operation[Verification]:
        """``POST /v1/keys/verify``, presenting no credential of the client's."""
        body: JSONObject = {"key": key}
        if scopes is not None:
            body["scopes"] = list(scopes)
        if cost is not None:
            body["cost"] = cost
        response = yield from self._call("POST", "/v1/keys/verify", body, auth=False)
        return _decoded(response, Verification._parse)

    # ------------------------------------------------------------ usage

    def usage(self, days: Optional[int], key_id: Optional[str]) -> Operation[Usage]:
        """``GET /v1/usage``."""
        params: Dict[str, str] = {}
        if days is not None:
            params["days"] = str(days)
        if key_id is not None:
            params["key_id"] = key_id
        response = yield from self._call("GET", "/v1/usage", params=params or None)
        return _decoded(response, Usage._parse)

    # ------------------------------------------------------------ webhooks

    def create_webhook(self, url: str, events: Sequence[str]) -> Operation[CreatedWebhook]:
        """``POST /v1/webhooks``."""
        body: JSONObject = {"url": url, "events": list(events)}
        response = yield from self._call("POST", "/v1/webhooks", body)
        return _decoded(response, CreatedWebhook._parse)

    def list_webhooks(self) -> Operation[List[Webhook]]:
        """``GET /v1/webhooks``."""
        response = yield from self._call("GET", "/v1/webhooks")
        return _decoded(response, lambda value: parse_list(value, "webhooks", Webhook._parse))

    def delete_webhook(self, webhook_id: str) -> Operation[None]:
        """``DELETE /v1/webhooks/{id}``."""
        yield from self._call("DELETE", f"/v1/webhooks/{_segment(webhook_id)}")

    def webhook_deliveries(self, webhook_id: str) -> Operation[List[WebhookDelivery]]:
        """``GET /v1/webhooks/{id}/deliveries``."""
        response = yield from self._call("GET", f"/v1/webhooks/{_segment(webhook_id)}/deliveries")
        return _decoded(
            response, lambda value: parse_list(value, "deliveries", WebhookDelivery._parse)
        )


def _token_pair(value: object) -> TokenPair:
    return TokenPair._read(fields(value, "tokens"))


def _stored_or_none(path: Path) -> Optional[StoredCredentials]:
    """The credentials file at ``path``; ``None`` when missing or unreadable."""
    try:
        return _credentials.load(path)
    except CredentialsFileError:
        return None
