"""Frames: parsing and encoding, and a fuzz run over a real connection."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

import pytest
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import (
    SUBPROTOCOL,
    ErrorCode,
    ProtocolError,
    ProtocolLimits,
    SessionWSRegistry,
)
from aiohttp_session_ws.protocol import (
    Arg,
    FrameError,
    Op,
    OpTable,
    encode_push,
    with_missed,
)

from .apps import TIMEOUT, build_app, cookie_ws_id, registry_of

LIMITS = ProtocolLimits()


async def _nothing(connection: Any, request: Any) -> None:
    return None


def table() -> OpTable[Any]:
    ops: OpTable[Any] = OpTable()
    ops.add(Op("echo", _nothing, {"text": Arg("str", required=True), "n": Arg("int")}))
    return ops


def test_a_valid_frame_parses() -> None:
    request, op = table().parse('{"op":"echo","id":3,"text":"hi","n":2}', LIMITS)
    assert (request.op, request.id, request.args) == ("echo", 3, {"text": "hi", "n": 2})
    assert op.name == "echo"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"op":"echo","id":1}', ErrorCode.BAD_FRAME),  # text missing
        ('{"op":"echo","id":1,"text":"a","n":true}', ErrorCode.BAD_FRAME),
        ('{"op":"echo","id":1,"text":"a","n":1.5}', ErrorCode.BAD_FRAME),
        ('{"op":"echo","id":9007199254740992,"text":"a"}', ErrorCode.BAD_FRAME),
        ("[" * 50_000, ErrorCode.BAD_FRAME),
        ('{"op":"echo","id":1,"text":"' + "é" * 40_000 + '"}', ErrorCode.TOO_LARGE),
    ],
)
def test_an_invalid_frame_raises_its_code(text: str, code: ErrorCode) -> None:
    with pytest.raises(FrameError) as caught:
        table().parse(text, LIMITS)
    assert caught.value.code == code


def test_op_names_are_taken_once() -> None:
    ops = table()
    with pytest.raises(ValueError, match="taken"):
        ops.add(Op("echo", _nothing))
    with pytest.raises(ValueError, match="taken"):
        ops.add(Op("push", _nothing))  # a server frame's op
    assert ops.names() == ["echo"]
    assert "echo" in ops


def test_a_missed_count_rides_on_an_encoded_frame() -> None:
    frame = with_missed(encode_push({"a": 1}), 3)
    assert json.loads(frame) == {"missed": 3, "op": "push", "data": {"a": 1}}


def test_errors_keep_unknown_codes_and_limits_are_checked() -> None:
    assert ProtocolError("brand_new", "x").code == "brand_new"
    assert ProtocolError("limit", "x").code is ErrorCode.LIMIT
    with pytest.raises(ValueError, match="rate"):
        ProtocolLimits(rate=0)
    with pytest.raises(ValueError, match="overflow"):
        ProtocolLimits(overflow="block")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_push(float("nan"))


# the fuzz run

FUZZ_FRAMES = 10_000
VALID = [
    {"op": "ping", "id": 1},
    {"op": "properties", "id": 2},
    {"op": "properties", "id": 3, "session": "abc"},
]
ATOMS: list[Any] = [None, True, False, 0, -1, 2**53, 2**64, 1.5, "", "ping", [], {}]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(4 if depth < 3 else 2)
    if kind == 0:
        return rng.choice(ATOMS)
    if kind == 1:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(8)))
    if kind == 2:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        rng.choice(["op", "id", "session", "x", ""]): random_value(rng, depth + 1)
        for _ in range(rng.randrange(4))
    }


def mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randrange(1, 4)):
        where = rng.randrange(len(chars) + 1)
        action = rng.randrange(3)
        if action == 0 and chars:
            del chars[min(where, len(chars) - 1)]
        elif action == 1:
            chars.insert(where, rng.choice('{}[]",:0123456789aeiou\\ \x00é'))
        elif chars:
            chars[min(where, len(chars) - 1)] = rng.choice("\"'{}x1")
    return "".join(chars)


def fuzz_frames(seed: int) -> list[str]:
    rng = random.Random(seed)
    frames = []
    for _ in range(FUZZ_FRAMES):
        kind = rng.randrange(6)
        if kind == 0:
            frames.append(json.dumps(random_value(rng)))
        elif kind == 1:
            frame = dict(rng.choice(VALID))
            frame[rng.choice(["op", "id", "session", "extra"])] = random_value(rng)
            frames.append(json.dumps(frame))
        elif kind == 2:
            frames.append("[" * rng.randrange(100, 5000))
        elif kind == 3:
            frames.append("x" * rng.choice([0, 1, LIMITS.max_frame_size + 1]))
        else:
            frames.append(mutate(rng, json.dumps(rng.choice(VALID))))
    return frames


async def test_fuzzed_frames_get_answers_and_disturb_no_one(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    registry = SessionWSRegistry(
        limits=ProtocolLimits(rate=1e9, burst=10**9, max_queue=FUZZ_FRAMES * 2)
    )
    attacker = await aiohttp_client(build_app(registry))
    bystander = await aiohttp_client(attacker.server)
    bad = await attacker.ws_connect("/live", protocols=(SUBPROTOCOL,))
    good = await bystander.ws_connect("/live", protocols=(SUBPROTOCOL,))
    await bad.receive(timeout=TIMEOUT)
    await good.receive(timeout=TIMEOUT)
    frames = fuzz_frames(seed=20261201)
    pushes = 0

    async def receive_answers() -> list[dict[str, Any]]:
        return [json.loads((await bad.receive(timeout=TIMEOUT)).data) for _ in frames]

    answers_task = asyncio.ensure_future(receive_answers())
    bystander_id = cookie_ws_id(bystander)
    with caplog.at_level(logging.ERROR):
        for index, frame in enumerate(frames):
            await bad.send_str(frame)
            if index % 100 == 0:
                assert await registry.send_to_session(bystander_id, index) == 1
                pushes += 1
        answers = await asyncio.wait_for(answers_task, TIMEOUT * 6)
        got = [
            json.loads((await good.receive(timeout=TIMEOUT)).data)
            for _ in range(pushes)
        ]
    assert [frame["data"] for frame in got] == list(range(0, FUZZ_FRAMES, 100))
    assert all(answer["op"] in ("result", "error") for answer in answers)
    errors = [answer for answer in answers if answer["op"] == "error"]
    assert len(errors) > FUZZ_FRAMES * 0.8
    assert all(error["code"] in {c.value for c in ErrorCode} for error in errors)
    assert "internal" not in {error["code"] for error in errors}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    stats = registry_of(attacker).stats()
    assert stats.frames_in == FUZZ_FRAMES
    assert sum(stats.errors.values()) == len(errors)
    # still serving
    await bad.send_str(json.dumps({"op": "ping", "id": 1}))
    assert json.loads((await bad.receive(timeout=TIMEOUT)).data)["op"] == "result"
    await bad.close()
    await good.close()
