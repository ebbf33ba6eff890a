"""Parsing and encoding protocol frames: the standard library, orjson, msgspec.

``python -m bench.frames`` times, in ns per frame:

- *decode + validate* of client frames (``{"op": "ping", "id": 1}``,
  ``{"op": "properties", "id": 2, "session": "abc"}``) and of invalid ones:
  not JSON, not an object, no usable ``id``, ``op`` not a string, an unknown
  op, a missing, unknown or mistyped argument. Every parser answers the same:
  the op, id and arguments, or an error code (``bad_frame``, ``unknown_op``)
  with the id when the frame had a usable one, as the protocol's error frame
  needs. The standard library and orjson parse, then a hand-written check
  validates; msgspec decodes into a tagged union of Structs
  (``tag_field="op"``, ``forbid_unknown_fields``, ids bounded by ``Meta``) and,
  only for a frame it refuses, decodes a lenient envelope for the id and code.
  The library's own parser (``OpTable.parse`` of ``protocol.py``: json.loads
  and a check) runs next to them, when the library has it.
- *encode* of push frames (``{"op": "push", "data": ...}``, ~100 B and ~2 KB)
  and of a result frame, to the bytes a websocket frame carries: with
  ``json.dumps(..., separators=...)`` (which makes an encoder per call), with a
  ``JSONEncoder`` made once, with the library's ``protocol.encode``, orjson and
  msgspec.
- for scale, the server's CPU to *write* one text frame to a real loopback
  websocket (``await ws.send_frame(b, WSMsgType.TEXT)``, and ``send_str``),
  and to *read* one (``async for msg in ws``), with the client in another
  process.

msgspec and orjson are optional: each is skipped, with a note, when it is not
installed (``pip install msgspec orjson`` for the experiment). Every loop is
bounded; ``--smoke`` runs tiny sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from .server import use_library_copy

MAX_ID = 2**53 - 1
OPS: dict[str, dict[str, type]] = {"ping": {}, "properties": {"session": str}}
"""Each op's optional arguments and their types (none is required here)."""
REQUIRED: dict[str, frozenset[str]] = {"ping": frozenset(), "properties": frozenset()}

VALID = {
    "ping": '{"op": "ping", "id": 1}',
    "properties": '{"op": "properties", "id": 2, "session": "abc"}',
}
INVALID = {
    "not JSON": '{"op": "ping", "id": 1',
    "not an object": "[1, 2]",
    "no id": '{"op": "ping"}',
    "id a bool": '{"op": "ping", "id": true}',
    "id too big": '{"op": "ping", "id": 9007199254740992}',
    "op not a string": '{"op": 1, "id": 3}',
    "unknown op": '{"op": "nope", "id": 4}',
    "unknown argument": '{"op": "ping", "id": 5, "x": 1}',
    "argument mistyped": '{"op": "properties", "id": 6, "session": 7}',
}
EXPECTED = {
    "not JSON": ("bad_frame", None),
    "not an object": ("bad_frame", None),
    "no id": ("bad_frame", None),
    "id a bool": ("bad_frame", None),
    "id too big": ("bad_frame", None),
    "op not a string": ("bad_frame", 3),
    "unknown op": ("unknown_op", 4),
    "unknown argument": ("bad_frame", 5),
    "argument mistyped": ("bad_frame", 6),
}
"""The code and id every parser must give each invalid frame."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A frame refused: the protocol's error code and the id, if usable."""

    code: str
    id: int | None
    message: str


Parsed = tuple[str, int, dict[str, Any]] | Refused
Parser = Callable[[str], Parsed]


def _small_payload() -> dict[str, Any]:
    return {
        "user": "ada",
        "n": 42,
        "text": "hello there, how are you doing?",
        "ok": True,
    }


def _large_payload() -> dict[str, Any]:
    return {
        "items": [
            {"id": i, "name": f"item number {i}", "price": i * 1.25, "tags": ["a", "b"]}
            for i in range(30)
        ],
        "total": 30,
    }


def validate(frame: object) -> Parsed:
    """The hand-written check of a parsed client frame."""
    if type(frame) is not dict:
        return Refused("bad_frame", None, "a frame is a JSON object")
    frame_id = frame.get("id")
    if type(frame_id) is not int or not 0 <= frame_id <= MAX_ID:
        return Refused("bad_frame", None, "id must be an integer in 0..2**53-1")
    op = frame.get("op")
    if type(op) is not str:
        return Refused("bad_frame", frame_id, "op must be a string")
    arguments = OPS.get(op)
    if arguments is None:
        return Refused("unknown_op", frame_id, f"no op {op[:40]!r}")
    args: dict[str, Any] = {}
    for key, value in frame.items():
        if key == "op" or key == "id":
            continue
        expected = arguments.get(key)
        if expected is None:
            return Refused("bad_frame", frame_id, f"unknown argument {key[:40]!r}")
        if type(value) is not expected:
            return Refused(
                "bad_frame", frame_id, f"{key} must be a {expected.__name__}"
            )
        args[key] = value
    missing = REQUIRED[op] - args.keys()
    if missing:
        return Refused("bad_frame", frame_id, f"missing {sorted(missing)}")
    return op, frame_id, args


def parse_stdlib(raw: str) -> Parsed:
    """``json.loads`` and the hand-written check."""
    try:
        frame = json.loads(raw)
    except ValueError:
        return Refused("bad_frame", None, "not JSON")
    return validate(frame)


def make_orjson(orjson: Any) -> Parser:
    """``orjson.loads`` and the hand-written check."""
    loads = orjson.loads
    error = orjson.JSONDecodeError

    def parse(raw: str) -> Parsed:
        try:
            frame = loads(raw)
        except error:
            return Refused("bad_frame", None, "not JSON")
        return validate(frame)

    return parse


def make_msgspec(msgspec: Any) -> Parser:
    """A tagged union of Structs; a lenient envelope only for refused frames."""
    from typing import Annotated

    frame_id = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
    options = {"tag_field": "op", "forbid_unknown_fields": True}
    ping = msgspec.defstruct("Ping", [("id", frame_id)], tag="ping", **options)
    properties = msgspec.defstruct(
        "Properties",
        [("id", frame_id), ("session", str | None, None)],
        tag="properties",
        **options,
    )
    decoder = msgspec.json.Decoder(ping | properties)
    envelope = msgspec.json.Decoder(
        msgspec.defstruct("Envelope", [("op", object, None), ("id", object, None)])
    )
    validation_error = msgspec.ValidationError
    decode_error = msgspec.DecodeError
    fields = {
        ping: ("ping", ()),
        properties: ("properties", ("session",)),
    }

    def refuse(raw: str, why: str) -> Refused:
        try:
            env = envelope.decode(raw)
        except decode_error:  # ValidationError too: not an object
            return Refused("bad_frame", None, why)
        good = type(env.id) is int and 0 <= env.id <= MAX_ID
        if not good:
            return Refused("bad_frame", None, why)
        if type(env.op) is str and env.op not in OPS:
            return Refused("unknown_op", env.id, why)
        return Refused("bad_frame", env.id, why)

    def parse(raw: str) -> Parsed:
        try:
            frame = decoder.decode(raw)
        except validation_error as exc:
            return refuse(raw, str(exc))
        except decode_error:
            return Refused("bad_frame", None, "not JSON")
        op, names = fields[type(frame)]
        args = {n: v for n in names if (v := getattr(frame, n)) is not None}
        return op, frame.id, args

    return parse


def make_library(protocol: Any) -> Parser:
    """The library's own parser (``OpTable.parse`` of ``protocol.py``)."""
    table = protocol.OpTable()

    async def answer(connection: object, request: object) -> None:
        return None

    table.add(protocol.Op("ping", answer))
    table.add(protocol.Op("properties", answer, {"session": protocol.Arg("str")}))
    limits = protocol.ProtocolLimits()
    frame_error = protocol.FrameError

    def parse(raw: str) -> Parsed:
        try:
            request, _ = table.parse(raw, limits)
        except frame_error as exc:
            return Refused(str(exc.code), exc.request_id, str(exc))
        return request.op, request.id, request.args

    return parse


Encoder = Callable[[dict[str, Any]], bytes]


def encoders(msgspec: Any, orjson: Any, protocol: Any = None) -> dict[str, Encoder]:
    """Each library's frame -> the bytes of a text frame."""
    dumps = json.dumps
    reused = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode
    found: dict[str, Encoder] = {
        "stdlib": lambda f: dumps(f, separators=(",", ":")).encode(),
        "stdlib, encoder made once": lambda f: reused(f).encode(),
    }
    if protocol is not None:
        found["library (protocol.encode)"] = protocol.encode
    if orjson is not None:
        found["orjson"] = orjson.dumps
    if msgspec is not None:
        found["msgspec"] = msgspec.json.Encoder().encode
    return found


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def time_ns(call: Callable[[], object], iterations: int, repeats: int) -> float:
    """The best over ``repeats`` of the ns per call of ``iterations`` calls.

    The best, not the median: on a shared machine the others are the same
    work plus what the neighbours did meanwhile.
    """
    samples = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(iterations):
            call()
        samples.append((time.perf_counter_ns() - started) / iterations)
    return min(samples)


def disagreements(parse: Parser) -> list[str]:
    """Where ``parse`` does not give a frame the answer the protocol wants."""
    found = []
    for label, raw in VALID.items():
        got = parse(raw)
        want = parse_stdlib(raw)
        if got != want:
            found.append(f"parsed {label} as {got!r}, not {want!r}")
    for label, raw in INVALID.items():
        refused = parse(raw)
        if not isinstance(refused, Refused):
            found.append(f"accepted {label}: {refused!r}")
        elif (refused.code, refused.id) != EXPECTED[label]:
            found.append(f"refused {label} as {refused.code} with id {refused.id}")
    return found


def check_parsers(parsers: dict[str, Parser]) -> None:
    """Every parser gives every frame the same answer (or the run is void)."""
    for name, parse in parsers.items():
        wrong = disagreements(parse)
        if wrong:
            raise AssertionError(f"{name}: {'; '.join(wrong)}")


def micro(iterations: int, repeats: int) -> dict[str, Any]:
    """Decode + validate and encode, ns per frame, per library."""
    msgspec, orjson = _optional("msgspec"), _optional("orjson")
    protocol = _optional("aiohttp_session_ws.protocol")
    parsers: dict[str, Parser] = {"stdlib": parse_stdlib}
    notes = []
    library: Parser | None = None
    if protocol is None or not hasattr(protocol, "OpTable"):
        notes.append("aiohttp_session_ws.protocol has no OpTable: its column skipped")
        protocol = None
    else:
        library = make_library(protocol)
        for wrong in disagreements(library):
            notes.append(f"the library's parser {wrong}")
    if orjson is None:
        notes.append("orjson is not installed: skipped")
    else:
        parsers["orjson"] = make_orjson(orjson)
    if msgspec is None:
        notes.append("msgspec is not installed: skipped")
    else:
        parsers["msgspec"] = make_msgspec(msgspec)
    check_parsers(parsers)
    if library is not None:
        parsers = {
            "stdlib": parse_stdlib,
            "library (OpTable.parse)": library,
            **parsers,
        }
    decode: dict[str, dict[str, float]] = {}
    for label, raw in {**VALID, **INVALID}.items():
        kind = "valid" if label in VALID else "invalid"
        decode[f"{kind}: {label}"] = {
            name: time_ns(lambda p=parse, r=raw: p(r), iterations, repeats)  # type: ignore[misc]
            for name, parse in parsers.items()
        }
    frames: dict[str, dict[str, Any]] = {
        "push, ~100 B": {"op": "push", "data": _small_payload()},
        "push, ~2 KB": {"op": "push", "data": _large_payload()},
        "result, ~100 B": {"op": "result", "id": 7, "data": _small_payload()},
    }
    encode: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}
    for label, frame in frames.items():
        row = {}
        for name, encode_frame in encoders(msgspec, orjson, protocol).items():
            row[name] = time_ns(
                lambda e=encode_frame, f=frame: e(f),  # type: ignore[misc]
                iterations,
                repeats,
            )
        encode[label] = row
        sizes[label] = len(encoders(None, None)["stdlib"](frame))
    versions = {
        "aiohttp": aiohttp.__version__,
        "msgspec": getattr(msgspec, "__version__", None),
        "orjson": getattr(orjson, "__version__", None),
    }
    return {
        "decode": decode,
        "encode": encode,
        "sizes": sizes,
        "notes": notes,
        "versions": versions,
    }


# the websocket, for scale
@dataclass
class _Run:
    kind: str
    """``send_frame``, ``send_str`` (the server writes) or ``read`` (it reads)."""
    count: int
    payload: int
    cpu: float = 0.0
    wall: float = 0.0


async def _client(url: str, plan: Sequence[str]) -> None:
    """The client process: one websocket per run of the plan, in order."""
    async with aiohttp.ClientSession() as http:
        for step in plan:
            kind, count, size = step.split(":")
            async with http.ws_connect(url) as ws:
                if kind == "read":  # the server reads: send it frames
                    frame = '{"op":"ping","id":1}'.ljust(int(size))
                    for _ in range(int(count)):
                        await ws.send_str(frame)
                    await asyncio.wait_for(ws.receive(), 30)  # its close
                    continue
                for _ in range(int(count)):
                    msg = await asyncio.wait_for(ws.receive(), 30)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise RuntimeError(f"unexpected {msg.type!r}")
                await ws.send_str("done")
                await asyncio.wait_for(ws.receive(), 30)


async def socket_costs(messages: int, payloads: Sequence[int]) -> list[dict[str, Any]]:
    """The server's CPU per frame written (and read) on a loopback websocket."""
    runs = [
        _Run(kind, messages, size)
        for size in payloads
        for kind in ("send_frame", "send_str", "read")
    ]
    queue = list(runs)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        run = queue.pop(0)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if run.kind == "read":
            received = 0
            cpu, wall = time.process_time(), time.perf_counter()
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    received += 1
                    if received == run.count:
                        break
            run.cpu = time.process_time() - cpu
            run.wall = time.perf_counter() - wall
            await ws.close()
            return ws
        text = "x" * run.payload
        data = text.encode()
        cpu, wall = time.process_time(), time.perf_counter()
        if run.kind == "send_frame":
            for _ in range(run.count):
                await ws.send_frame(data, aiohttp.WSMsgType.TEXT)
        else:
            for _ in range(run.count):
                await ws.send_str(text)
        run.cpu = time.process_time() - cpu
        run.wall = time.perf_counter() - wall
        await ws.receive()  # "done"
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    plan = [f"{run.kind}:{run.count}:{run.payload}" for run in runs]
    try:
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.frames",
            "--client",
            f"http://127.0.0.1:{port}/ws",
            *plan,
        )
        try:
            code = await asyncio.wait_for(client.wait(), 300)
        finally:
            if client.returncode is None:
                client.kill()
                await client.wait()
        if code != 0:
            raise RuntimeError(f"the websocket client exited with {code}")
    finally:
        await runner.cleanup()
    return [
        {
            "kind": run.kind,
            "payload": run.payload,
            "count": run.count,
            "cpu_ns": run.cpu / run.count * 1e9,
            "wall_ns": run.wall / run.count * 1e9,
        }
        for run in runs
    ]


def _table(headings: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    """The tables, as Markdown."""
    out = []
    decode = results["decode"]
    names = list(next(iter(decode.values())))
    rows = []
    for label, row in decode.items():
        cells = [label] + [f"{row[n]:,.0f}" for n in names]
        if "msgspec" in row:
            cells.append(f"{row['msgspec'] / row['stdlib']:.2f}x")
        rows.append(cells)
    tail = ["msgspec / stdlib"] if "msgspec" in names else []
    out += [
        "Decode + validate, ns per frame (best of the repeats):",
        "",
        _table(["frame", *names, *tail], rows),
        "",
    ]
    encode = results["encode"]
    names = list(next(iter(encode.values())))
    rows = [
        [f"{label} ({results['sizes'][label]} B)"] + [f"{row[n]:,.0f}" for n in names]
        for label, row in encode.items()
    ]
    out += ["Encode to bytes, ns per frame:", "", _table(["frame", *names], rows), ""]
    if results.get("socket"):
        rows = [
            [
                f"{run['kind']}, {run['payload']} B",
                f"{run['cpu_ns']:,.0f}",
                f"{run['wall_ns']:,.0f}",
            ]
            for run in results["socket"]
        ]
        out += [
            "One frame on a loopback websocket, the server's side "
            f"({results['socket'][0]['count']:,} frames each):",
            "",
            _table(["", "server CPU ns/frame", "wall ns/frame"], rows),
            "",
        ]
        out += _fractions(results)
    out += [f"Note: {note}." for note in results["notes"]]
    versions = ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v)
    out.append(f"Python {sys.version.split()[0]}; {versions or 'no optional library'}.")
    return "\n".join(out) + "\n"


def _fractions(results: dict[str, Any]) -> list[str]:
    """What share of handling one frame the parsing or encoding is."""
    runs = {(r["kind"], r["payload"]): r["cpu_ns"] for r in results["socket"]}
    small = min(r["payload"] for r in results["socket"])
    large = max(r["payload"] for r in results["socket"])
    read = runs[("read", small)]
    write_small = runs[("send_frame", small)]
    write_large = runs[("send_frame", large)]
    decode = results["decode"]
    encode = results["encode"]
    rows = []
    same = {"library (OpTable.parse)": "library (protocol.encode)"}
    for name in decode["valid: properties"]:
        parse = decode["valid: properties"][name]
        encoder = same.get(name, name)
        reply = encode["result, ~100 B"].get(
            encoder, encode["result, ~100 B"]["stdlib"]
        )
        request = read + parse + reply + write_small
        push_small = encode["push, ~100 B"].get(encoder)
        push_large = encode["push, ~2 KB"].get(encoder)
        cells = [
            name if encoder == name else f"{name}, {encoder}",
            f"{parse:,.0f} + {reply:,.0f} of {request:,.0f} ns: "
            f"{(parse + reply) / request:.0%}",
        ]
        for push, write in ((push_small, write_small), (push_large, write_large)):
            if push is None:
                cells.append("")
                continue
            cells.append(
                f"{push / (push + write):.0%} / {push / (push + 100 * write):.1%}"
            )
        rows.append(cells)
    return [
        "Share of the server's CPU: a request (read a frame, decode + validate "
        "`properties`, encode a ~100 B result, write it), and a push encoded once "
        "for 1 / for 100 sockets:",
        "",
        _table(
            ["parser", "request", "push ~100 B: 1 / 100", "push ~2 KB: 1 / 100"], rows
        ),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    """Parse options, time, print the tables."""
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--client":
        asyncio.run(_client(sys.argv[2], sys.argv[3:]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.frames", description=__doc__)
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--messages", type=int, default=20_000, help="per socket run")
    parser.add_argument("--no-socket", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--json", help="write the figures to this file")
    options = parser.parse_args(argv)
    use_library_copy()
    iterations = 200 if options.smoke else options.iterations
    repeats = 2 if options.smoke else options.repeats
    messages = 200 if options.smoke else options.messages
    if not (1 <= iterations <= 1_000_000 and 1 <= messages <= 1_000_000):
        parser.error("--iterations and --messages must be in 1..1000000")
    results = micro(iterations, repeats)
    if not options.no_socket:
        results["socket"] = asyncio.run(socket_costs(messages, (100, 2000)))
    if options.json:
        with open(options.json, "w") as file:
            json.dump(results, file, indent=1)
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
