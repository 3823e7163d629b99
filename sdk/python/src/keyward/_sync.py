"""The synchronous client: :class:`Client`, a thin driver of the protocol in ``_core``."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import List, Optional, Sequence, Type, TypeVar, Union

import httpx

from ._core import (
    DEFAULT_TIMEOUT,
    UNSET,
    Core,
    Done,
    Exclusive,
    Operation,
    Unset,
    advance,
    connection_error,
)
from ._credentials import Credentials
from ._errors import KeywardError
from ._models import (
    CreatedKey,
    CreatedWebhook,
    Credits,
    JSONObject,
    Key,
    Me,
    RateLimit,
    Registration,
    Tenant,
    TokenPair,
    Usage,
    Verification,
    Webhook,
    WebhookDelivery,
)

__all__ = ["Client", "Keys", "Webhooks"]

_T = TypeVar("_T")


class Client:
    """A client of one Keyward server.

    Use it as a context manager, or call :meth:`close`, to release its connections::

        with keyward.Client(base_url="https://auth.example.com", api_key="kw_…") as client:
            print(client.whoami().email)

    Thread-safe: threads may share one client. When several calls meet an expired access
    token at once, one of them refreshes and the others wait for it, so the refresh token
    is spent once.

    ``repr()`` shows the base URL and which credentials are held, never their values.

    Attributes:
        keys: The API key calls (:class:`Keys`).
        webhooks: The webhook calls (:class:`Webhooks`).

    """

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """A client of the server at ``base_url``, e.g. ``"https://auth.example.com"``.

        Args:
            base_url: The server's URL; a path prefix (``https://example.com/keyward``) is
                kept.
            api_key: The API key to authenticate with. Without it, the key given to
                :func:`keyward.set_key` if any, else no credential (call :meth:`login` or
                :meth:`register`, or use :meth:`from_env` to read the credentials file).
            timeout: Seconds a request may take, connecting included.

        Raises:
            ValueError: ``base_url`` is not an ``http://`` or ``https://`` URL, or it holds
                credentials, a query or a fragment.

        """
        self._setup(Core.new(base_url, api_key, timeout))

    @classmethod
    def from_env(cls, timeout: float = DEFAULT_TIMEOUT) -> Client:
        """A client configured like the ``keyward`` CLI, from the environment and its file.

        - The URL: ``$KEYWARD_URL``, else the credentials file's ``url``, else
          ``http://127.0.0.1:7777``.
        - The credentials: the key given to :func:`keyward.set_key`, else
          ``$KEYWARD_API_KEY``, else those of the credentials file
          (:func:`keyward.credentials_path`), but only when the file's ``url`` is the URL in
          use: credentials issued by one server are never sent to another.

        Empty variables count as unset. Credentials read from the file are kept up to date
        there: a refreshed token pair is written back, and :meth:`logout` deletes the file.

        Raises:
            CredentialsFileError: The credentials file exists but cannot be read or parsed.
            ValueError: ``$KEYWARD_URL`` is not an http(s) URL.

        """
        client = cls.__new__(cls)
        client._setup(Core.from_env(timeout))
        return client

    def _setup(self, core: Core) -> None:
        self._core = core
        self._http = httpx.Client(follow_redirects=False)
        self._refresh_lock = threading.Lock()
        self.keys = Keys(self)
        self.webhooks = Webhooks(self)

    def _run(self, operation: Operation[_T]) -> _T:
        """Drives ``operation``: sends its requests and runs its exclusive parts under the lock."""
        sent: object = None
        error: Optional[KeywardError] = None
        while True:
            step = advance(operation, sent, error)
            if isinstance(step, Done):
                return step.value
            try:
                sent, error = self._perform(step), None
            except KeywardError as failure:
                sent, error = None, failure

    def _perform(self, effect: Union[httpx.Request, Exclusive[object]]) -> object:
        if isinstance(effect, Exclusive):
            with self._refresh_lock:
                return self._run(effect.operation)
        try:
            return self._http.send(effect)
        except httpx.TransportError as error:
            raise connection_error(effect, error) from error

    def close(self) -> None:
        """Closes the client's connections. The client cannot be used afterwards."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self._core!r})"

    @property
    def base_url(self) -> str:
        """The server's URL, without a trailing slash."""
        return self._core.base_url

    @property
    def credentials(self) -> Credentials:
        """The credentials the client holds now (they change on login, refresh and logout)."""
        return self._core.credentials

    # ------------------------------------------------------------ accounts and sessions

    def register(
        self,
        email: str,
        password: str,
        name: Optional[str] = None,
        tenant_name: Optional[str] = None,
        persist: bool = False,
    ) -> Registration:
        """Create a user, with a new tenant they own, and log in as them.

        The client then holds the new session in place of any credentials it had. With
        ``persist``, the session is written to the credentials file, as :meth:`login` does.

        Args:
            email: The new user's email.
            password: 8 to 128 characters, not a common password.
            name: The user's display name.
            tenant_name: The new tenant's name; by default, after the email.
            persist: Write the session to the credentials file and keep it up to date.

        Raises:
            EmailTaken: The email is already registered.
            ValidationFailed: A field is invalid (``.errors`` names it).
            RateLimited: Too many registrations from this address.

        """
        return self._run(self._core.register(email, password, name, tenant_name, persist))

    def login(self, email: str, password: str, persist: bool = True) -> TokenPair:
        """Log in with an email and password; the client then acts as that user.

        The client keeps the session's token pair in place of any credentials it had, and
        refreshes it by itself when the access token expires.

        Args:
            email: The account's email (any letter case).
            password: Its password.
            persist: Write the session to the credentials file the ``keyward`` CLI uses (mode
                0600, atomically), for this server's URL, and write every refreshed pair back.
                The previous content of the file is replaced.

        Raises:
            InvalidCredentials: The email or the password is wrong.
            RateLimited: Too many failed logins; ``retry_after`` says how long to wait.
            CredentialsFileError: ``persist`` and the file cannot be written.

        """
        return self._run(self._core.login(email, password, persist))

    def logout(self, all_sessions: bool = False) -> None:
        """Log out: end the session on the server, and forget every credential.

        When the client holds a session, it is revoked on the server (with ``all_sessions``,
        every session of the user). Then the client forgets its credentials (an API key too;
        the key itself stays valid: revoke it with :meth:`Keys.revoke`), and deletes the
        credentials file if it was using it. A session that had already ended is not an error.

        Raises:
            KeywardError: The server could not revoke the session (e.g. it was unreachable).
                The credentials are forgotten even then.

        """
        self._run(self._core.logout(all_sessions))

    def whoami(self) -> Me:
        """Who the credentials belong to: user, tenant and how they authenticate.

        Also the way to check that credentials work (see :meth:`validate_credentials`).

        Raises:
            MissingCredentials: The client holds no credentials.
            InvalidAPIKey: The API key is unknown, expired, revoked or disabled.
            InvalidToken: The session was revoked.

        """
        return self._run(self._core.me())

    def validate_credentials(self) -> Me:
        """Check the client's credentials with the server: the same call as :meth:`whoami`."""
        return self.whoami()

    def tenant(self) -> Tenant:
        """The caller's tenant, with its creation time."""
        return self._run(self._core.tenant())

    def usage(self, days: Optional[int] = None, key_id: Optional[str] = None) -> Usage:
        """Metered requests (verifications and gateway requests) of the caller's tenant.

        Args:
            days: How many UTC days, today included: 1 to 90; the server's default is 30.
            key_id: Only the requests of this key, one of the caller's.

        Raises:
            ValidationFailed: ``days`` is out of range.
            NotFound: ``key_id`` is not one of the caller's keys.

        """
        return self._run(self._core.usage(days, key_id))

    def verify(
        self,
        key: str,
        scopes: Optional[Sequence[str]] = None,
        cost: Optional[int] = None,
    ) -> Verification:
        """Verify an API key presented to your service.

        Sends none of the client's own credentials: any client can verify. A refused key is
        an answer with ``valid=False`` and a ``code`` saying why, not an exception.

        Args:
            key: The API key to check.
            scopes: Scopes the key must hold (``read`` ⊂ ``write`` ⊂ ``admin`` applies).
            cost: Credits this use spends, for a key with credits (the server's default is 1).

        """
        return self._run(self._core.verify(key, scopes, cost))


class Keys:
    """The API key calls of a :class:`Client`: ``client.keys.create(…)`` and so on."""

    def __init__(self, client: Client) -> None:
        """The key calls of ``client``; use ``client.keys`` rather than building one."""
        self._client = client

    def create(
        self,
        name: str,
        *,
        description: Optional[str] = None,
        expires_in_days: Optional[int] = None,
        scopes: Optional[Sequence[str]] = None,
        meta: Optional[JSONObject] = None,
        rate_limit: Optional[RateLimit] = None,
        credits: Optional[Credits] = None,
    ) -> CreatedKey:
        """Mint an API key. Its ``key`` is shown in this answer only: save it now.

        Args:
            name: 1 to 64 characters, starting with a letter; letters, digits, space, ``-``,
                ``_`` and ``.``.
            description: Up to 500 characters.
            expires_in_days: 1 to 3650; ``None`` for a key that never expires.
            scopes: The key's scopes; by default ``["admin"]`` for a session, the calling
                key's own scopes for a key.
            meta: A JSON object (up to 4 KiB) that verification returns.
            rate_limit: At most this many requests per window.
            credits: Usage credits that verification spends.

        Raises:
            ValidationFailed: A field is invalid (``.errors`` names it).
            KeyLimitReached: The user has as many active keys as the server allows.
            InsufficientScope: The calling key lacks a scope it asked for.

        """
        client = self._client
        return client._run(
            client._core.create_key(
                name,
                description=description,
                expires_in_days=expires_in_days,
                scopes=scopes,
                meta=meta,
                rate_limit=rate_limit,
                credits=credits,
            )
        )

    def list(self, include_revoked: bool = False) -> List[Key]:
        """The caller's keys, newest first, masked; revoked ones only with ``include_revoked``."""
        return self._client._run(self._client._core.list_keys(include_revoked))

    def get(self, key_id: str) -> Key:
        """One of the caller's keys, revoked ones included.

        Raises:
            NotFound: No such key among the caller's (another user's key is not found either).

        """
        return self._client._run(self._client._core.get_key(key_id))

    def update(
        self,
        key_id: str,
        *,
        name: Union[str, Unset] = UNSET,
        description: Union[str, Unset, None] = UNSET,
        meta: Union[JSONObject, Unset, None] = UNSET,
        enabled: Union[bool, Unset] = UNSET,
        scopes: Union[Sequence[str], Unset] = UNSET,
        rate_limit: Union[RateLimit, Unset, None] = UNSET,
        credits: Union[Credits, Unset, None] = UNSET,
    ) -> Key:
        """Change a key's settings; only the arguments given are sent.

        ``None`` clears a field (``rate_limit=None`` removes the rate limit, ``credits=None``
        makes the key unlimited); an argument left out (:data:`keyward.UNSET`) leaves it as
        it is.

        Args:
            key_id: The key's id.
            name: A new name.
            description: A new description, or ``None`` for none.
            meta: A new ``meta`` object, or ``None`` for none.
            enabled: ``False`` to disable the key (it verifies as ``DISABLED`` and is refused
                elsewhere) until it is enabled again.
            scopes: Narrower scopes (scopes can only be narrowed).
            rate_limit: A new rate limit, or ``None`` for none.
            credits: New credits, or ``None`` for unlimited.

        Raises:
            NotFound: No such key among the caller's.
            ValidationFailed: A field is invalid.

        """
        changes = {
            "name": name,
            "description": description,
            "meta": meta,
            "enabled": enabled,
            "scopes": scopes,
            "rate_limit": rate_limit,
            "credits": credits,
        }
        return self._client._run(self._client._core.update_key(key_id, changes))

    def revoke(self, key_id: str) -> None:
        """Revoke a key, from the server's very next request on. Cannot be undone.

        Raises:
            NotFound: No such key among the caller's.

        """
        self._client._run(self._client._core.revoke_key(key_id))

    def rotate(self, key_id: str, grace_period_seconds: Optional[int] = None) -> CreatedKey:
        """Replace a key by a new one: new id and key; same name, scopes and settings.

        Args:
            key_id: The key to replace.
            grace_period_seconds: How long the old key keeps working; by default it is
                revoked at once.

        Raises:
            NotFound: No such key among the caller's.

        """
        return self._client._run(self._client._core.rotate_key(key_id, grace_period_seconds))


class Webhooks:
    """The webhook calls of a :class:`Client` (a session is needed)."""

    def __init__(self, client: Client) -> None:
        """The webhook calls of ``client``; use ``client.webhooks`` rather than building one."""
        self._client = client

    def create(self, url: str, events: Sequence[str]) -> CreatedWebhook:
        """Register an endpoint for events. Its signing ``secret`` is shown this once.

        Args:
            url: Where deliveries are POSTed.
            events: E.g. ``["key.created", "key.revoked", "key.leaked"]``.

        """
        return self._client._run(self._client._core.create_webhook(url, events))

    def list(self) -> List[Webhook]:
        """The tenant's webhooks."""
        return self._client._run(self._client._core.list_webhooks())

    def delete(self, webhook_id: str) -> None:
        """Delete a webhook; no more events are delivered to it.

        Raises:
            NotFound: No such webhook.

        """
        self._client._run(self._client._core.delete_webhook(webhook_id))

    def deliveries(self, webhook_id: str) -> List[WebhookDelivery]:
        """The events queued for a webhook, with every delivery attempt.

        Raises:
            NotFound: No such webhook.

        """
        return self._client._run(self._client._core.webhook_deliveries(webhook_id))
