"""Where the idle memory of a tracked websocket goes.

``python -m bench.memory_split`` opens N idle websockets (default 2,000: 1,000
sessions x 2) over real loopback connections to a fresh server per variant,
and splits the memory they hold. Variants, each adding one thing to the last:

==============  ===========================================================
``bare``        a raw aiohttp websocket in a set: no sessions, no cookie
``bare+cookie`` the same server; the client sends the session cookie (bigger
                request headers, held by the request object)
``raw``         the suite's floor: aiohttp-session's middleware loads the
                encrypted cookie session; a dict of sets of sockets
``ours-memory`` ours (``session_ws`` and its middleware) on the memory backend
``ours``        ours on ``RedisSessionWSRegistry``, as the suite runs it
``protocol``    ours, protocol connections (``session_ws_endpoint``); skipped
                while the library has none
==============  ===========================================================

Each variant runs twice, each time in a fresh server: without tracemalloc for
the RSS per socket, and with tracemalloc (``--frames`` deep, from the mark on)
for the Python heap per socket, by allocation site. A site is the first frame
outside the standard library (most recent first), so a ``uuid4().hex`` counts
where it was called.
The tables: the figures per variant; the split (the differences between
consecutive variants); for each step the sites and object types it adds; the
traced heap per file and variant. ``--json FILE`` keeps the raw figures.

``--login`` logs each session in on the server after the mark (as the suite's
idle-memory scenario does: its RSS then also holds what 1,000 logins left
behind) instead of sending a cookie made by the client.

``--lib DIR`` measures a copy of the package (``DIR/aiohttp_session_ws``), such
as a prototype of a cut, instead of the work tree. Loopback only; every wait
is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import linecache
import os
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet

from .memory_server import TRACE_VARIABLE
from .procs import ROOT, RedisServer, ServerProcess
from .push_common import SUBPROTOCOL
from .scenarios import until
from .server import LIB_PATH_VARIABLE
from .server_common import COOKIE_SECRET, SESSION_KEY

COOKIE_NAME = "BENCH_SESSION"
OPEN_CONCURRENCY = 100
FRAMES = 30


@dataclass(frozen=True)
class Variant:
    """One server set-up and how the client connects to it."""

    name: str
    app: str
    """The app :mod:`bench.memory_server` builds."""
    cookie: bool
    path: str = "/ws"
    protocol: bool = False
    """Offer our subprotocol and read the hello first."""


VARIANTS = {
    v.name: v
    for v in (
        Variant("bare", "bare", cookie=False),
        Variant("bare+cookie", "bare", cookie=True),
        Variant("raw", "raw", cookie=True),
        Variant("ours-memory", "ours-memory", cookie=True),
        Variant("ours", "ours", cookie=True),
        Variant("protocol", "ours", cookie=True, path="/live", protocol=True),
    )
}

STEPS = [
    ("the websocket (aiohttp)", None, "bare"),
    ("(3) the cookie: bigger request headers", "bare", "bare+cookie"),
    ("(2) aiohttp-session: the session loaded per request", "bare+cookie", "raw"),
    ("(1) ours on the memory backend", "raw", "ours-memory"),
    ("(1) ours: the Redis backend's extra", "ours-memory", "ours"),
    ("(1) ours, in all", "raw", "ours"),
    ("a protocol connection instead of session_ws", "ours", "protocol"),
    ("ours in all, vs bare", "bare", "ours"),
]


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def session_cookie(fernet: Fernet, session_id: str) -> str:
    """The cookie that aiohttp-session's EncryptedCookieStorage would have set."""
    data = {"created": int(time.time()), "session": {SESSION_KEY: session_id}}
    token = fernet.encrypt(json.dumps(data).encode()).decode()
    return f"{COOKIE_NAME}={token}"


async def _open(
    http: aiohttp.ClientSession, url: str, variant: Variant, cookie: str | None
) -> aiohttp.ClientWebSocketResponse:
    headers = {"Cookie": cookie} if cookie else {}
    protocols = (SUBPROTOCOL,) if variant.protocol else ()
    ws = await http.ws_connect(url, headers=headers, protocols=protocols)
    if variant.protocol:
        await asyncio.wait_for(ws.receive_str(), 30)  # hello
    return ws


async def _login(http: aiohttp.ClientSession, base_url: str) -> str:
    async with http.post(f"{base_url}/login") as response:
        response.raise_for_status()
        return "; ".join(f"{k}={m.value}" for k, m in response.cookies.items())


async def _open_many(
    http: aiohttp.ClientSession,
    base_url: str,
    variant: Variant,
    sockets: int,
    per_session: int,
    login: bool = False,
) -> list[aiohttp.ClientWebSocketResponse]:
    fernet = Fernet(base64.urlsafe_b64encode(COOKIE_SECRET))
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    sessions = max(1, sockets // per_session)
    url = base_url + variant.path
    login = login and variant.app != "bare"  # the bare server has no sessions

    async def one_session() -> list[aiohttp.ClientWebSocketResponse]:
        async with gate:
            cookie = None
            if login:
                cookie = await _login(http, base_url)
            elif variant.cookie:
                cookie = session_cookie(fernet, uuid.uuid4().hex)
            return [await _open(http, url, variant, cookie) for _ in range(per_session)]

    groups = await asyncio.gather(*(one_session() for _ in range(sessions)))
    return [ws for group in groups for ws in group]


async def _close_many(sockets: Sequence[aiohttp.ClientWebSocketResponse]) -> None:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(ws: aiohttp.ClientWebSocketResponse) -> None:
        async with gate:
            await ws.close()

    await asyncio.gather(*(one(ws) for ws in sockets))


async def _get(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as response:
        response.raise_for_status()
        body: dict[str, Any] = await response.json()
        return body


async def measure_variant(
    variant: Variant,
    redis_url: str,
    sockets: int,
    per_session: int,
    frames: int | None,
    login: bool = False,
) -> dict[str, Any]:
    """One fresh server: warm up, mark, open the sockets, measure, close.

    With ``login``, each session logs in (``POST /login``) after the mark, as
    the suite's idle-memory scenario does, instead of bringing a cookie made
    here.
    """
    env = {TRACE_VARIABLE: str(frames)} if frames else {}
    prefix = f"mem-{variant.name}-{uuid.uuid4().hex[:6]}"
    node = ServerProcess(
        variant.app, redis_url, prefix, module="bench.memory_server", env=env
    )
    try:
        # one keep-alive connection for the control requests, made before the mark
        control = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        ws_http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        async with control, ws_http:
            stats_url = f"{node.url}/bench/stats"

            async def tracked(count: int) -> None:
                async def check() -> bool:
                    return bool((await _get(control, stats_url))["sockets"] == count)

                await until(check, f"{variant.name} to track {count} sockets", 120)

            warm = await _open_many(ws_http, node.url, variant, 10, per_session, login)
            await tracked(len(warm))
            await _close_many(warm)
            await tracked(0)
            await _get(control, f"{node.url}/mem/mark")
            started = time.perf_counter()
            held = await _open_many(
                ws_http, node.url, variant, sockets, per_session, login
            )
            await tracked(len(held))
            opened = time.perf_counter()
            stats = await _get(control, stats_url)
            result = await _get(control, f"{node.url}/mem/measure")
            _log(
                f"  opened in {opened - started:.1f} s, "
                f"measured in {time.perf_counter() - opened:.1f} s"
            )
            result["sockets"] = len(held)
            result["sessions"] = stats["sessions"]
            await _close_many(held)
    finally:
        node.stop()
    return result


async def protocol_missing(redis_url: str) -> str:
    """Why our server cannot serve protocol connections ('' when it can)."""
    node = ServerProcess("ours", redis_url, f"mem-features-{uuid.uuid4().hex[:6]}")
    try:
        async with aiohttp.ClientSession() as http:
            reply = await _get(http, f"{node.url}/bench/features")
    finally:
        node.stop()
    return str(reply["missing"])


async def run(
    names: Sequence[str],
    sockets: int,
    per_session: int,
    frames: int,
    rss: bool,
    login: bool = False,
) -> dict[str, Any]:
    """Measure every variant: RSS (if asked) and the traced heap."""
    redis_server = RedisServer()
    redis_server.start()
    results: dict[str, Any] = {"variants": {}, "skipped": {}}
    try:
        if "protocol" in names:
            missing = await protocol_missing(redis_server.url)
            if missing:
                results["skipped"]["protocol"] = missing
                names = [n for n in names if n != "protocol"]
        for name in names:
            variant = VARIANTS[name]
            entry: dict[str, Any] = {}
            if rss:
                _log(f"{name}: {sockets} sockets, RSS")
                untraced = await measure_variant(
                    variant, redis_server.url, sockets, per_session, None, login
                )
                entry["rss"] = untraced["rss"]
                entry["types"] = untraced["types"]
            _log(f"{name}: {sockets} sockets, tracemalloc ({frames} frames)")
            traced = await measure_variant(
                variant, redis_server.url, sockets, per_session, frames, login
            )
            entry["traced"] = traced["traced"]
            entry["traced_rss"] = traced["rss"]
            entry.setdefault("types", traced["types"])
            entry["sockets"] = traced["sockets"]
            entry["sessions"] = traced["sessions"]
            results["variants"][name] = entry
    finally:
        redis_server.cleanup()
    return results


# analysis
_STDLIB = sysconfig.get_paths()["stdlib"] + os.sep
_SITE = "site-packages" + os.sep


def _is_stdlib(filename: str) -> bool:
    return filename.startswith("<") or (
        filename.startswith(_STDLIB) and _SITE not in filename
    )


def short(filename: str) -> str:
    """A file name relative to site-packages, the stdlib or the project."""
    if _SITE in filename:
        return filename.split(_SITE, 1)[1]
    if filename.startswith(_STDLIB):
        return filename[len(_STDLIB) :]
    for root in (str(ROOT), os.environ.get(LIB_PATH_VARIABLE, "")):
        if root and filename.startswith(root + os.sep):
            return filename[len(root) + 1 :]
    return filename


_ENTRY_POINTS = ("bench/memory_server.py", "bench/server.py")
"""The servers' main: an allocation whose first frame outside the standard
library is there was made by the event loop itself (asyncio)."""
_HANDLERS = "bench/impl_"


def site_of(frames: Sequence[Sequence[Any]]) -> tuple[str, int]:
    """The first frame outside the standard library, most recent first.

    If that is the server's main, the allocation is the event loop's: its
    most recent frame is the site.
    """
    for filename, line in frames:
        if short(filename) in _ENTRY_POINTS:
            break
        if not _is_stdlib(filename):
            return filename, int(line)
    filename, line = frames[0]
    return filename, int(line)


def site_key(site: tuple[str, int]) -> str:
    """How sites are told apart: file and line, or their code.

    The code for the benchmark's handlers: each variant has its own copy of
    the same lines.
    """
    name = short(site[0])
    if name.startswith(_HANDLERS):
        return f"the app's handler: {_code(*site)}"
    return f"{name}:{site[1]}"


OWNERS = (
    ("aiohttp_session_ws/", "ours"),
    ("aiohttp_session/", "aiohttp-session"),
    ("cryptography/", "aiohttp-session"),
    ("bench/", "the app's handler"),
    ("aiohttp/", "aiohttp"),
    ("multidict/", "aiohttp"),
    ("yarl/", "aiohttp"),
    ("redis/", "redis-py"),
)


def owner_of(filename: str) -> str:
    """Whose code made the allocation (by the site's file)."""
    name = short(filename)
    for prefix, owner in OWNERS:
        if name.startswith(prefix):
            return owner
    return "stdlib" if _is_stdlib(filename) else "other"


@dataclass
class Site:
    """What one allocation site holds."""

    filename: str
    line: int
    size: int = 0
    count: int = 0


def by_site(entry: dict[str, Any]) -> dict[str, Site]:
    """Traced bytes and blocks per allocation site (see :func:`site_key`)."""
    sites: dict[str, Site] = {}
    for trace in entry["traced"]["sites"]:
        where = site_of(trace["frames"])
        site = sites.setdefault(site_key(where), Site(*where))
        site.size += trace["size"]
        site.count += trace["count"]
    return sites


def by_file(entry: dict[str, Any]) -> dict[str, int]:
    """Traced bytes per file of the allocation site."""
    files: collections.Counter[str] = collections.Counter()
    for site in by_site(entry).values():
        name = short(site.filename)
        files[
            "bench/impl_* (the app's handler)" if name.startswith(_HANDLERS) else name
        ] += site.size
    files["(sites under 64 B)"] += entry["traced"]["small"]
    return dict(files)


def _kib(value: float, sockets: int) -> str:
    return f"{value / sockets / 1024:+.2f}"


def _table(headings: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _code(filename: str, line: int) -> str:
    text = linecache.getline(filename, line).strip().replace("|", "\\|")
    return text[:70]


def render(results: dict[str, Any], top: int = 12) -> str:
    """The tables, as Markdown."""
    variants: dict[str, Any] = results["variants"]
    out: list[str] = []
    rows = []
    for name, entry in variants.items():
        n = entry["sockets"]
        rss = entry.get("rss")
        rows.append(
            [
                name,
                str(n),
                str(entry["sessions"]),
                "" if rss is None else f"{rss / n / 1024:.2f}",
                f"{entry['traced']['total'] / n / 1024:.2f}",
            ]
        )
    out += [
        "Per idle socket, by variant (KiB):",
        "",
        _table(
            ["variant", "sockets", "sessions", "RSS KiB/socket", "traced KiB/socket"],
            rows,
        ),
        "",
    ]
    split = []
    for label, before, after in STEPS:
        if after not in variants or (before is not None and before not in variants):
            continue
        a = variants[after]
        n = a["sockets"]
        if before is None:
            rss = a.get("rss")
            traced = a["traced"]["total"]
        else:
            b = variants[before]
            rss = None if "rss" not in a else a["rss"] - b["rss"]
            traced = a["traced"]["total"] - b["traced"]["total"]
        name = after if before is None else f"{after} - {before}"
        split.append(
            [
                label,
                name,
                "" if rss is None else _kib(rss, n),
                _kib(traced, n),
            ]
        )
    out += [
        "The split (KiB per socket; RSS is noisier, the traced heap exact):",
        "",
        _table(["step", "variants", "RSS", "traced"], split),
        "",
    ]
    for label, before, after in STEPS:
        if before is None or after not in variants or before not in variants:
            continue
        if label.startswith("ours in all"):
            continue
        out += _step_detail(label, variants[before], variants[after], top)
    out += _by_file_table(variants, top)
    for name, reason in results.get("skipped", {}).items():
        out.append(f"Skipped {name}: {reason}.")
    return "\n".join(out) + "\n"


def _step_detail(
    label: str, before: dict[str, Any], after: dict[str, Any], top: int
) -> list[str]:
    n = after["sockets"]
    sites_a, sites_b = by_site(after), by_site(before)
    deltas = []
    for key in sites_a.keys() | sites_b.keys():
        a = sites_a.get(key)
        b = sites_b.get(key)
        site = a or b
        assert site is not None
        size = (a.size if a else 0) - (b.size if b else 0)
        count = (a.count if a else 0) - (b.count if b else 0)
        if abs(size) >= n * 8:  # 8 B per socket or more
            deltas.append((size, count, site))
    deltas.sort(key=lambda d: -abs(d[0]))
    rows = [
        [
            f"`{short(site.filename)}:{site.line}`",
            owner_of(site.filename),
            f"{size / n:+.0f}",
            f"{count / n:+.2f}",
            f"`{_code(site.filename, site.line)}`",
        ]
        for size, count, site in deltas[:top]
    ]
    shown = sum(d[0] for d in deltas[:top])
    total = after["traced"]["total"] - before["traced"]["total"]
    types_a, types_b = after["types"], before["types"]
    type_deltas = sorted(
        (
            ((types_a.get(t, 0) - types_b.get(t, 0)) / n, t)
            for t in types_a.keys() | types_b.keys()
        ),
        key=lambda d: -abs(d[0]),
    )
    objects = ", ".join(
        f"{name.removeprefix('builtins.')} {count:+.2f}"
        for count, name in type_deltas[:10]
        if abs(count) >= 0.05
    )
    return [
        f"{label}: {total / n:+.0f} B per socket traced; the biggest sites "
        f"({shown / n:+.0f} B):",
        "",
        _table(["site", "owner", "B/socket", "blocks/socket", "code"], rows),
        "",
        f"gc-tracked objects per socket: {objects or 'none'}",
        "",
    ]


def _by_file_table(variants: dict[str, Any], top: int) -> list[str]:
    files = {name: by_file(entry) for name, entry in variants.items()}
    everything: collections.Counter[str] = collections.Counter()
    for counts in files.values():
        for filename, size in counts.items():
            everything[filename] = max(everything[filename], abs(size))
    chosen = [f for f, _ in everything.most_common(top * 2)]
    rows = []
    for filename in chosen:
        cells = [f"`{filename}`"]
        for name, entry in variants.items():
            cells.append(f"{files[name].get(filename, 0) / entry['sockets']:.0f}")
        rows.append(cells)
    return [
        "Traced bytes per socket by file of the allocation site:",
        "",
        _table(["file", *variants], rows),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    """Parse options, measure, print the tables."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory_split", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--per-session", type=int, default=2)
    parser.add_argument(
        "--variant", action="append", choices=list(VARIANTS), help="repeatable"
    )
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--top", type=int, default=12, help="sites shown per step")
    parser.add_argument("--no-rss", action="store_true", help="tracemalloc only")
    parser.add_argument("--smoke", action="store_true", help="20 sockets")
    parser.add_argument(
        "--login",
        action="store_true",
        help="log each session in on the server after the mark, as the suite does",
    )
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--lib", type=Path, help="measure DIR/aiohttp_session_ws")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only print the tables of a --json"
    )
    options = parser.parse_args(argv)
    if options.render is not None:
        print(render(json.loads(options.render.read_text()), options.top))
        return 0
    if options.lib is not None:
        os.environ[LIB_PATH_VARIABLE] = str(options.lib.resolve())
    sockets = 20 if options.smoke else options.sockets
    if not 1 <= sockets <= 10_000:
        parser.error("--sockets must be in 1..10000")
    names = options.variant or list(VARIANTS)
    results = asyncio.run(
        run(
            names,
            sockets,
            options.per_session,
            options.frames,
            not options.no_rss,
            options.login,
        )
    )
    results["lib"] = os.environ.get(LIB_PATH_VARIABLE, str(ROOT))
    if options.json is not None:
        options.json.write_text(json.dumps(results) + "\n")
    print(render(results, options.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
