from __future__ import annotations

import pytest

from aiohttp_session_ws.ids import check_session_ws_id, local_id, redact, wire_id


@pytest.mark.parametrize("good", ["a", "0123abcdef", "ünïcødé", 0, 1, -5, 2**70])
def test_str_and_int_ids_are_accepted(good: str | int) -> None:
    check_session_ws_id(good)


@pytest.mark.parametrize("bad", [None, True, False, 1.5, b"x", ("a",), ["a"]])
def test_other_types_are_refused(bad: object) -> None:
    with pytest.raises(TypeError, match="must be a str or an int"):
        check_session_ws_id(bad)


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "empty"),
        ("\udc80", "lone surrogate"),
        ("abc\ud800def", "lone surrogate"),
        (b"\xff\xfe".decode("utf-8", "surrogateescape"), "lone surrogate"),
    ],
)
def test_ids_redis_cannot_carry_are_refused(bad: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_session_ws_id(bad)


def test_wire_ids_keep_the_type() -> None:
    assert wire_id(1) != wire_id("1")
    for value in ["1", 1, "i:1", "s:x", "ü", 0, -3]:
        assert local_id(wire_id(value)) == value
        assert type(local_id(wire_id(value))) is type(value)


@pytest.mark.parametrize("junk", ["", "x", "s:", "i:", "i:x", "1"])
def test_what_is_not_a_wire_id_has_no_local_id(junk: str) -> None:
    assert local_id(junk) is None


def test_redact_hides_the_id_and_is_stable() -> None:
    secret = wire_id("secret-session-id")
    shown = redact(secret)
    assert shown == redact(secret)  # one session reads the same in the logs
    assert shown != redact(wire_id("another"))
    assert shown.startswith("#")
    assert len(shown) == 11
    assert all(c in "0123456789abcdef" for c in shown[1:])  # no piece of the id
    assert "sec" not in shown


def test_an_int_id_is_a_key_not_a_number() -> None:
    check_session_ws_id(2**128 - 1)  # a UUID as an int
    with pytest.raises(ValueError, match="bits"):
        check_session_ws_id(2**128)
    with pytest.raises(ValueError, match="bits"):
        check_session_ws_id(10**5000)  # str() of it would raise
