"""The operator's client for the agent protocol (``shardkeeper.api.agent``).

One shared aiohttp session, explicit timeouts, and HTTP outcomes translated into
``AgentUnreachable`` (no answer) and ``AgentRefused`` (an answer that says no).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
from pydantic import BaseModel, SecretStr, ValidationError

from shardkeeper.api.agent import (
    AbortRequest,
    ErrorBody,
    NodeInfo,
    OperationStatus,
    PrepareBackup,
    PrepareRestore,
    StatusQuery,
)
from shardkeeper.errors import AgentRefused, AgentUnreachable

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class NodeEndpoint:
    """An agent, as discovered from its pod."""

    name: str
    pod_uid: str
    url: str


class AgentClient:
    def __init__(
        self, session: aiohttp.ClientSession, token: SecretStr, *, timeout: float, abort_timeout: float
    ) -> None:
        self._session = session
        self._headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._abort_timeout = aiohttp.ClientTimeout(total=abort_timeout)

    async def _call(
        self,
        ep: NodeEndpoint,
        method: str,
        path: str,
        model: type[M],
        *,
        body: BaseModel | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
        allow_404: bool = False,
    ) -> M | None:
        payload: Any = body.model_dump(mode="json", by_alias=True, exclude_none=True) if body else None
        try:
            async with self._session.request(
                method,
                ep.url + path,
                json=payload,
                headers=self._headers,
                timeout=client_timeout or self._timeout,
            ) as resp:
                text = await resp.text()
                if resp.status == 404 and allow_404:
                    return None
                if resp.status >= 300:
                    holder = None
                    try:
                        error = ErrorBody.model_validate_json(text)
                        message, holder = error.error, error.holder
                    except ValidationError:
                        message = text[:300] or resp.reason or str(resp.status)
                    raise AgentRefused(
                        f'node "{ep.name}": {message}',
                        status=resp.status,
                        holder_uid=holder.uid if holder else None,
                    )
                return model.model_validate_json(text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentUnreachable(f'node "{ep.name}": agent at {ep.url} did not answer: {exc!r}') from exc
        except ValidationError as exc:
            raise AgentRefused(f'node "{ep.name}": unexpected answer: {exc}', status=502) from exc

    async def node_info(self, ep: NodeEndpoint) -> NodeInfo:
        info = await self._call(ep, "GET", "/v1/node", NodeInfo)
        assert info is not None
        return info

    async def prepare(self, ep: NodeEndpoint, request: PrepareBackup | PrepareRestore) -> OperationStatus:
        status = await self._call(ep, "PUT", f"/v1/operations/{request.id}", OperationStatus, body=request)
        assert status is not None
        return status

    async def status(
        self,
        ep: NodeEndpoint,
        op_id: str,
        *,
        deadline_seconds: float | None = None,
        wait: StatusQuery | None = None,
    ) -> OperationStatus | None:
        """None if the agent does not know the operation (it restarted, or never got it).

        ``deadline_seconds`` replaces the request timeout, e.g. with what is left of a silent node's
        unreachable deadline, so that a hung agent cannot stretch it. With ``wait`` (a long poll),
        the agent answers once the phase is not ``wait.wait_while``, at the latest after
        ``wait.timeout_seconds``, which the request's timeout is lengthened by."""
        timeout = deadline_seconds if deadline_seconds is not None else self._timeout.total
        if wait is not None and timeout is not None:
            timeout += wait.timeout_seconds
        query = f"?{urlencode(wait.wire())}" if wait is not None else ""
        return await self._call(
            ep,
            "GET",
            f"/v1/operations/{op_id}{query}",
            OperationStatus,
            allow_404=True,
            client_timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def step(self, ep: NodeEndpoint, op_id: str, step: str) -> OperationStatus:
        """Moves an operation on: ``commit``, ``release``, ``finalize`` or ``complete``."""
        status = await self._call(ep, "POST", f"/v1/operations/{op_id}/{step}", OperationStatus)
        assert status is not None
        return status

    async def abort(
        self, ep: NodeEndpoint, op_id: str, reason: str, *, quick: bool = False
    ) -> OperationStatus | None:
        """Waits until the agent has stopped and cleaned up (the abort timeout), or only the
        request timeout with ``quick`` (an agent that has not been answering)."""
        return await self._call(
            ep,
            "POST",
            f"/v1/operations/{op_id}/abort",
            OperationStatus,
            body=AbortRequest(reason=reason),
            client_timeout=self._timeout if quick else self._abort_timeout,
            allow_404=True,
        )
