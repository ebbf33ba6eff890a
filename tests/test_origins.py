"""Origin checks on the upgrade: parsing, and real upgrades from other origins."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import SessionWSRegistry
from aiohttp_session_ws.origins import normalize_origin, normalize_origins

from .apps import build_app


@pytest.mark.parametrize(
    ("origin", "normalized"),
    [
        ("https://App.Example", "https://app.example:443"),
        ("https://app.example:443/", "https://app.example:443"),
        ("http://app.example", "http://app.example:80"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_origins_are_normalized(origin: str, normalized: str) -> None:
    assert normalize_origin(origin) == normalized


@pytest.mark.parametrize(
    "bad",
    [
        "app.example",
        "ftp://app.example",
        "https://",
        "https://a.example/path",
        "https://a.example?q=1",
        "https://u@a.example",
        "null",
        "https://a.example:99999",
    ],
)
def test_non_origins_are_refused_with_the_form_to_use(bad: str) -> None:
    with pytest.raises(ValueError, match=r"scheme://host\[:port\]"):
        normalize_origin(bad)


def test_allowed_origins_are_checked_when_the_registry_is_made() -> None:
    with pytest.raises(TypeError, match="collection"):
        SessionWSRegistry(allowed_origins="https://app.example")
    with pytest.raises(ValueError, match=r"Not an origin: 'app\.example'"):
        SessionWSRegistry(allowed_origins=["app.example"])
    assert normalize_origins(["*", "https://a.example"]) == {
        "*",
        "https://a.example:443",
    }


@pytest.mark.parametrize(
    ("allowed", "headers", "status"),
    [
        ((), {"Origin": "http://evil.example"}, 403),
        ((), {}, 101),  # not a browser
        ((), {"Origin": "not a url"}, 403),
        (("http://app.example",), {"Origin": "http://app.example/"}, 101),
        (("https://app.example",), {"Origin": "http://app.example"}, 403),
        (("http://app.example",), {"Origin": "http://other.example"}, 403),
        (("*",), {"Origin": "http://anything.example"}, 101),
        # same host: the Host header's port defaults to the origin's scheme
        ((), {"Origin": "https://app.example", "Host": "app.example"}, 101),
        ((), {"Origin": "https://app.example", "Host": "app.example:443"}, 101),
        ((), {"Origin": "http://app.example", "Host": "App.Example:80"}, 101),
        ((), {"Origin": "https://app.example", "Host": "app.example:8443"}, 403),
        ((), {"Origin": "https://app.example", "Host": "bad host"}, 403),
    ],
)
async def test_upgrade_origins(
    aiohttp_client: AiohttpClient,
    allowed: tuple[str, ...],
    headers: dict[str, str],
    status: int,
) -> None:
    registry = SessionWSRegistry(allowed_origins=allowed)
    client = await aiohttp_client(build_app(registry))
    if status == 403:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await client.ws_connect("/ws", headers=headers)
        assert err.value.status == 403
        assert len(registry) == 0
    else:
        ws = await client.ws_connect("/ws", headers=headers)
        assert len(registry) == 1
        await ws.close()


async def test_the_page_own_origin_passes(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(build_app())
    own = f"http://{client.host}:{client.port}"
    ws = await client.ws_connect("/ws", headers={"Origin": own})
    await ws.close()
