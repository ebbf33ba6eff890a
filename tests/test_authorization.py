"""The authorization policies: the default, and the one over aiohttp-security."""

from __future__ import annotations

import json
from typing import Any

import aiohttp_security
import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp_security.abc import AbstractAuthorizationPolicy

from aiohttp_session_ws import (
    SUBPROTOCOL,
    Action,
    SessionWSRegistry,
    aiohttp_security_policy,
)
from aiohttp_session_ws.authorization import VIEW_SESSION

from .apps import TIMEOUT, Client, build_app, cookie_ws_id, registry_of


class HeaderIdentity(aiohttp_security.AbstractIdentityPolicy):
    """The identity is the X-User header (a test stand-in for a login)."""

    async def identify(self, request: web.Request) -> str | None:
        return request.headers.get("X-User")

    async def remember(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def forget(self, *args: Any, **kwargs: Any) -> None:
        pass


class Admins(AbstractAuthorizationPolicy):
    """``admin`` may view sessions; everyone is authorized as themselves."""

    def __init__(self) -> None:
        self.asked: list[tuple[str | None, str, Any]] = []

    async def authorized_userid(self, identity: str) -> str | None:
        return identity

    async def permits(
        self, identity: str | None, permission: str | Any, context: Any = None
    ) -> bool:
        self.asked.append((identity, permission, context))
        return identity == "admin" and permission == VIEW_SESSION


async def connect(
    client: Client, user: str | None = None
) -> tuple[Any, dict[str, Any]]:
    headers = {"X-User": user} if user else {}
    ws = await client.ws_connect("/live", protocols=(SUBPROTOCOL,), headers=headers)
    hello: dict[str, Any] = json.loads((await ws.receive(timeout=TIMEOUT)).data)
    return ws, hello


async def read_other(ws: Any, handle: str) -> dict[str, Any]:
    await ws.send_str(json.dumps({"op": "properties", "id": 1, "session": handle}))
    reply: dict[str, Any] = json.loads((await ws.receive(timeout=TIMEOUT)).data)
    return reply


async def test_the_default_denies_reaching_another_session(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(build_app())
    other = await aiohttp_client(client.server)
    ws, _ = await connect(client)
    other_ws, other_hello = await connect(other)
    reply = await read_other(ws, other_hello["session"])
    assert (reply["code"], reply["id"]) == ("forbidden", 1)
    assert VIEW_SESSION in reply["message"]
    # its own session, named by its own handle, is not asked about
    own = await read_other(other_ws, other_hello["session"])
    assert own["op"] == "result"
    await ws.close()
    await other_ws.close()


async def test_the_aiohttp_security_policy_asks_permits(
    aiohttp_client: AiohttpClient,
) -> None:
    app = build_app(SessionWSRegistry(authorize=aiohttp_security_policy()))
    admins = Admins()
    aiohttp_security.setup(app, HeaderIdentity(), admins)
    client = await aiohttp_client(app)
    other = await aiohttp_client(client.server)
    admin_ws, admin_hello = await connect(client, "admin")
    user_ws, user_hello = await connect(other, "bob")
    registry = registry_of(client)
    assert await registry.set_session_properties(cookie_ws_id(other), {"x": "1"})
    allowed = await read_other(admin_ws, user_hello["session"])
    assert allowed["data"] == {"$SessionId": user_hello["session"], "x": "1"}
    denied = await read_other(user_ws, admin_hello["session"])
    assert denied["code"] == "forbidden"
    asked = [(who, what) for who, what, _ in admins.asked]
    assert asked == [("admin", VIEW_SESSION), ("bob", VIEW_SESSION)]
    assert isinstance(admins.asked[0][2], Action)
    # $Principal comes from aiohttp-security's authorized_userid
    await admin_ws.send_str(json.dumps({"op": "properties", "id": 2}))
    own = json.loads((await admin_ws.receive(timeout=TIMEOUT)).data)["data"]
    assert own["$Principal"] == "admin"
    await admin_ws.close()
    await user_ws.close()


async def test_the_aiohttp_security_policy_denies_when_not_set_up(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_app(SessionWSRegistry(authorize=aiohttp_security_policy()))
    client = await aiohttp_client(app)
    other = await aiohttp_client(client.server)
    ws, _ = await connect(client)
    other_ws, other_hello = await connect(other)
    assert (await read_other(ws, other_hello["session"]))["code"] == "forbidden"
    assert "not set up" in caplog.text
    await ws.close()
    await other_ws.close()


async def test_a_failing_or_sync_policy(aiohttp_client: AiohttpClient) -> None:
    def broken(request: web.Request, action: Action) -> bool:
        raise RuntimeError("policy bug")

    def truthy(request: web.Request, action: Action) -> Any:
        return 1  # not True: denied

    for policy in (broken, truthy):
        client = await aiohttp_client(build_app(SessionWSRegistry(authorize=policy)))
        other = await aiohttp_client(client.server)
        ws, _ = await connect(client)
        other_ws, other_hello = await connect(other)
        assert (await read_other(ws, other_hello["session"]))["code"] == "forbidden"
        await ws.close()
        await other_ws.close()
