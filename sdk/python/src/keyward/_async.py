"""The asynchronous client: :class:`AsyncClient`, a thin driver of the protocol in ``_core``.

Every method mirrors :class:`keyward.Client`'s, whose docstrings give the details, and is
awaited.
"""

from __future__ import annotations

import asyncio
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

__all__ = ["AsyncClient", "AsyncKeys", "AsyncWebhooks"]

_T = TypeVar("_T")


class AsyncClient:
    """An asyncio client of one Keyward server: :class:`keyward.Client` with awaitable calls.

    Use it as an async context manager, or call :meth:`aclose`::

        async with keyward.AsyncClient(base_url="https://auth.example.com") as client:
            await client.login("ada@example.com", password)
            keys = await client.keys.list()

    Concurrent calls that meet an expired access token together refresh it once: one
    refreshes while the others wait on a lock, then all retry with the new token.

    Writing the credentials file (with ``persist``) is a small blocking write done in the
    event loop.

    Attributes:
        keys: The API key calls (:class:`AsyncKeys`).
        webhooks: The webhook calls (:class:`AsyncWebhooks`).

    """

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """A client of the server at ``base_url``; see :meth:`keyward.Client.__init__`."""
        self._setup(Core.new(base_url, api_key, timeout))

    @classmethod
    def from_env(cls, timeout: float = DEFAULT_TIMEOUT) -> AsyncClient:
        """A client configured like the CLI; see :meth:`keyward.Client.from_env`."""
        client = cls.__new__(cls)
        client._setup(Core.from_env(timeout))
        return client

    def _setup(self, core: Core) -> None:
        self._core = core
        self._http = httpx.AsyncClient(follow_redirects=False)
        # Made on first use, inside the running event loop (Python 3.9 binds a lock to the
        # loop current when it is made).
        self._refresh_lock: Optional[asyncio.Lock] = None
        self.keys = AsyncKeys(self)
        self.webhooks = AsyncWebhooks(self)

    async def _run(self, operation: Operation[_T]) -> _T:
        """Drives ``operation``: sends its requests and runs its exclusive parts under the lock."""
        sent: object = None
        error: Optional[KeywardError] = None
        while True:
            step = advance(operation, sent, error)
            if isinstance(step, Done):
                return step.value
            try:
                sent, error = await self._perform(step), None
            except KeywardError as failure:
                sent, error = None, failure

    async def _perform(self, effect: Union[httpx.Request, Exclusive[object]]) -> object:
        if isinstance(effect, Exclusive):
            if self._refresh_lock is None:
                self._refresh_lock = asyncio.Lock()
            async with self._refresh_lock:
                return await self._run(effect.operation)
        try:
            return await self._http.send(effect)
        except httpx.TransportError as error:
            raise connection_error(effect, error) from error

    async def aclose(self) -> None:
        """Closes the client's connections. The client cannot be used afterwards."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self._core!r})"

    @property
    def base_url(self) -> str:
        """The server's URL, without a trailing slash."""
        return self._core.base_url

    @property
    def credentials(self) -> Credentials:
        """The credentials the client holds now (they change on login, refresh and logout)."""
        return self._core.credentials

    # ------------------------------------------------------------ accounts and sessions

    async def register(
        self,
        email: str,
        password: str,
        name: Optional[str] = None,
        tenant_name: Optional[str] = None,
        persist: bool = False,
    ) -> Registration:
        """Create a user and their tenant, and log in; see :meth:`keyward.Client.register`."""
        return await self._run(self._core.register(email, password, name, tenant_name, persist))

    async def login(self, email: str, password: str, persist: bool = True) -> TokenPair:
        """Log in with an email and password; see :meth:`keyward.Client.login`."""
        return await self._run(self._core.login(email, password, persist))

    async def logout(self, all_sessions: bool = False) -> None:
        """End the session and forget every credential; see :meth:`keyward.Client.logout`."""
        await self._run(self._core.logout(all_sessions))

    async def whoami(self) -> Me:
        """Who the credentials belong to; see :meth:`keyward.Client.whoami`."""
        return await self._run(self._core.me())

    async def validate_credentials(self) -> Me:
        """Check the client's credentials with the server: the same call as :meth:`whoami`."""
        return await self.whoami()

    async def tenant(self) -> Tenant:
        """The caller's tenant, with its creation time."""
        return await self._run(self._core.tenant())

    async def usage(self, days: Optional[int] = None, key_id: Optional[str] = None) -> Usage:
        """Metered requests of the caller's tenant; see :meth:`keyward.Client.usage`."""
        return await self._run(self._core.usage(days, key_id))

    async def verify(
        self,
        key: str,
        scopes: Optional[Sequence[str]] = None,
        cost: Optional[int] = None,
    ) -> Verification:
        """Verify an API key, presenting no credential; see :meth:`keyward.Client.verify`."""
        return await self._run(self._core.verify(key, scopes, cost))


class AsyncKeys:
    """The API key calls of an :class:`AsyncClient`; see :class:`keyward.Keys`."""

    def __init__(self, client: AsyncClient) -> None:
        """The key calls of ``client``; use ``client.keys`` rather than building one."""
        self._client = client

    async def create(
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
        """Mint an API key, shown in this answer only; see :meth:`keyward.Keys.create`."""
        client = self._client
        return await client._run(
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

    async def list(self, include_revoked: bool = False) -> List[Key]:
        """The caller's keys, newest first, masked; revoked ones only with ``include_revoked``."""
        return await self._client._run(self._client._core.list_keys(include_revoked))

    async def get(self, key_id: str) -> Key:
        """One of the caller's keys, revoked ones included; see :meth:`keyward.Keys.get`."""
        return await self._client._run(self._client._core.get_key(key_id))

    async def update(
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
        """Change a key's settings (only those given); see :meth:`keyward.Keys.update`."""
        changes = {
            "name": name,
            "description": description,
            "meta": meta,
            "enabled": enabled,
            "scopes": scopes,
            "rate_limit": rate_limit,
            "credits": credits,
        }
        return await self._client._run(self._client._core.update_key(key_id, changes))

    async def revoke(self, key_id: str) -> None:
        """Revoke a key, from the server's very next request on; see :meth:`keyward.Keys.revoke`."""
        await self._client._run(self._client._core.revoke_key(key_id))

    async def rotate(self, key_id: str, grace_period_seconds: Optional[int] = None) -> CreatedKey:
        """Replace a key by a new one; see :meth:`keyward.Keys.rotate`."""
        return await self._client._run(self._client._core.rotate_key(key_id, grace_period_seconds))


class AsyncWebhooks:
    """The webhook calls of an :class:`AsyncClient`; see :class:`keyward.Webhooks`."""

    def __init__(self, client: AsyncClient) -> None:
        """The webhook calls of ``client``; use ``client.webhooks`` rather than building one."""
        self._client = client

    async def create(self, url: str, events: Sequence[str]) -> CreatedWebhook:
        """Register an endpoint for events; its signing ``secret`` is shown this once."""
        return await self._client._run(self._client._core.create_webhook(url, events))

    async def list(self) -> List[Webhook]:
        """The tenant's webhooks."""
        return await self._client._run(self._client._core.list_webhooks())

    async def delete(self, webhook_id: str) -> None:
        """Delete a webhook; no more events are delivered to it."""
        await self._client._run(self._client._core.delete_webhook(webhook_id))

    async def deliveries(self, webhook_id: str) -> List[WebhookDelivery]:
        """The events queued for a webhook, with every delivery attempt."""
        return await self._client._run(self._client._core.webhook_deliveries(webhook_id))
