"""Origin checks on the upgrade: parsing, and real upgrades from other origins."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp.typedefs import Handler

from aiohttp_session_ws import SessionWSRegistry
from aiohttp_session_ws.origins import normalize_origin, normalize_origins

from .apps import Client, build_app


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
        # same host: the Host header's port defaults to the request's scheme
        ((), {"Origin": "http://app.example", "Host": "app.example"}, 101),
        ((), {"Origin": "http://app.example", "Host": "App.Example:80"}, 101),
        ((), {"Origin": "http://app.example", "Host": "app.example:8080"}, 403),
        ((), {"Origin": "http://app.example", "Host": "bad host"}, 403),
        # the scheme is the request's: this test server speaks http
        ((), {"Origin": "https://app.example", "Host": "app.example"}, 403),
        ((), {"Origin": "https://app.example", "Host": "app.example:443"}, 403),
        ((), {"Origin": "https://app.example:80", "Host": "app.example:80"}, 403),
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


@web.middleware
async def forwarded_https(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What a forwarded-headers middleware (aiohttp-remotes) does behind TLS."""
    return await handler(request.clone(scheme="https"))


async def refusal_text(client: Client, origin: str) -> str:
    """The text of the 403 an upgrade from ``origin`` gets."""
    async with client.get("/ws", headers={"Origin": origin}) as resp:
        assert resp.status == 403
        return await resp.text()


async def test_same_host_needs_the_request_scheme(
    aiohttp_client: AiohttpClient,
) -> None:
    plain = await aiohttp_client(build_app())
    http_own = f"http://{plain.host}:{plain.port}"
    https_same_host = f"https://{plain.host}:{plain.port}"
    ws = await plain.ws_connect("/ws", headers={"Origin": http_own})
    await ws.close()
    text = await refusal_text(plain, https_same_host)
    assert "this request came over http" in text
    assert "forwarded-headers middleware" in text

    app = build_app()
    app.middlewares.insert(0, forwarded_https)
    behind_tls = await aiohttp_client(app)
    ws = await behind_tls.ws_connect(
        "/ws", headers={"Origin": "https://app.example", "Host": "app.example"}
    )
    await ws.close()
    text = await refusal_text(behind_tls, f"http://{behind_tls.host}:{behind_tls.port}")
    assert "this request came over https" in text


async def test_a_wildcard_allows_subdomains_only(
    aiohttp_client: AiohttpClient,
) -> None:
    registry = SessionWSRegistry(
        allowed_origins=["https://*.example.com", "http://*.dev.example:8080"]
    )
    client = await aiohttp_client(build_app(registry))
    outcomes: dict[str, int] = {}
    for origin in [
        "https://app.example.com",
        "https://a.b.example.com",
        "https://APP.Example.com:443",
        "http://x.dev.example:8080",
        "https://example.com",  # not the apex
        "https://badexample.com",
        "https://app.example.com.evil.example",
        "http://app.example.com",  # another scheme
        "https://app.example.com:8443",  # another port
        "http://x.dev.example",
        "https://*.example.com",  # a browser never sends a wildcard
    ]:
        try:
            ws = await client.ws_connect("/ws", headers={"Origin": origin})
        except aiohttp.WSServerHandshakeError as refused:
            outcomes[origin] = refused.status
        else:
            outcomes[origin] = 101
            await ws.close()
    assert outcomes == {
        "https://app.example.com": 101,
        "https://a.b.example.com": 101,
        "https://APP.Example.com:443": 101,
        "http://x.dev.example:8080": 101,
        "https://example.com": 403,
        "https://badexample.com": 403,
        "https://app.example.com.evil.example": 403,
        "http://app.example.com": 403,
        "https://app.example.com:8443": 403,
        "http://x.dev.example": 403,
        "https://*.example.com": 403,
    }


def test_wildcards_are_normalized_and_misplaced_stars_refused() -> None:
    assert normalize_origins(["https://*.Example.com", "http://*.a.example:81"]) == {
        "https://*.example.com:443",
        "http://*.a.example:81",
    }
    for bad in [
        "https://app.*.com",
        "https://*",
        "https://*example.com",
        "https://x*.example.com",
        "https://*.*.example.com",
        "https://*.",
        "https://*..example.com",
        "https://*.0.0.1",
    ]:
        with pytest.raises(
            ValueError, match=r"Bad wildcard.*'https://\*\.example\.com'"
        ):
            normalize_origins([bad])
    with pytest.raises(
        ValueError,
        match=r"Not an origin: '\*\.example\.com'.*'https://\*\.example\.com'",
    ):
        SessionWSRegistry(allowed_origins=["*.example.com"])
    with pytest.raises(ValueError, match="Not an origin"):
        normalize_origin("https://*.example.com")  # an Origin header names one host
