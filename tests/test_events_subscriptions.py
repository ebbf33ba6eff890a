from __future__ import annotations

import itertools
import random

import pytest

from aiohttp_session_ws.events.model import MAX_SEGMENTS, EventType
from aiohttp_session_ws.events.subscriptions import (
    MAX_QUERY_TYPES,
    EventTypeCollection,
    Subscription,
    check_query_type,
    parse_query_type,
    subscription_from_json,
    subscription_to_json,
)

S = Subscription


@pytest.mark.parametrize(
    ("query_types", "event_type", "expected"),
    [
        ([()], (), True),
        ([()], ("a",), False),
        ([("a",)], (), False),
        ([("a",)], ("a",), True),
        ([("a",)], ("b",), False),
        ([("a",)], ("a", "b"), False),
        ([("a", "b")], ("a", "b"), True),
        ([("a", "b")], ("a",), False),
        ([("a", "b")], ("b", "a"), False),
        ([("?",)], (), False),
        ([("?",)], ("a",), True),
        ([("?",)], ("a", "b"), False),
        ([("?", "b")], ("a", "b"), True),
        ([("?", "b")], ("a", "c"), False),
        ([("a", "?")], ("a", "zz"), True),
        ([("a", "?")], ("a",), False),
        ([("?", "?")], ("x", "y"), True),
        ([("?", "?")], ("x", "y", "z"), False),
        ([("*",)], (), True),
        ([("*",)], ("a",), True),
        ([("*",)], ("a", "b", "c"), True),
        ([("a", "*")], ("a",), True),
        ([("a", "*")], ("a", "b", "c"), True),
        ([("a", "*")], (), False),
        ([("a", "*")], ("b", "a"), False),
        ([("?", "*")], (), False),
        ([("?", "*")], ("q",), True),
        ([("a", "?", "*")], ("a",), False),
        ([("a", "?", "*")], ("a", "b"), True),
        ([("a", "?", "*")], ("a", "b", "c", "d"), True),
        ([("a", "?", "c")], ("a", "b", "c"), True),
        ([("a", "?", "c")], ("a", "b", "d"), False),
        ([], (), False),
        ([], ("a",), False),
        ([("a",), ("b", "*")], ("b", "x"), True),
        ([("a",), ("b", "*")], ("a", "x"), False),
        ([("a", "b"), ("a", "?")], ("a", "c"), True),
        ([("?",), ("a", "b")], ("a", "b"), True),
        # a segment that is literally "?" in an event type is just a segment
        ([("a",)], ("?",), False),
    ],
)
def test_matches(
    query_types: list[EventType], event_type: EventType, expected: bool
) -> None:
    assert S(query_types).matches(event_type) is expected


@pytest.mark.parametrize(
    "bad",
    [
        [("*", "a")],
        [("a", "*", "b")],
        [("*", "*")],
        [("a", "")],
        [("a/b",)],
        [("a?",)],
        [("b*",)],
        [("a", 1)],
        ["a"],
        [("x" * 200,)],
        [("a",) * (MAX_SEGMENTS + 1)],
        [("a", "\x00")],
        "abc",
    ],
)
def test_invalid_query_types(bad: object) -> None:
    with pytest.raises(ValueError, match=r"query type|segment|event type"):
        S(bad)  # type: ignore[arg-type]


def test_star_in_the_middle_says_why() -> None:
    with pytest.raises(ValueError, match=r"'\*' is only the last segment"):
        S([("a", "*", "b")])


def test_limits() -> None:
    S([("a", str(i)) for i in range(MAX_QUERY_TYPES)])
    with pytest.raises(ValueError, match="at most 64 query types"):
        S([("a", str(i)) for i in range(MAX_QUERY_TYPES + 1)])
    # a generator is not consumed past the limit
    with pytest.raises(ValueError, match="at most"):
        S(("a", str(i)) for i in itertools.count())
    S([("?",) * MAX_SEGMENTS])
    S([("?",) * (MAX_SEGMENTS - 1) + ("*",)])
    with pytest.raises(ValueError, match="at most 32 segments"):
        S([("?",) * (MAX_SEGMENTS + 1)])


@pytest.mark.parametrize(
    ("query_types", "simplified"),
    [
        ([], []),
        ([("a",), ("a",)], [("a",)]),
        ([("a", "b"), ("a", "?"), ("a", "*")], [("a", "*")]),
        ([("a", "b"), ("a", "?")], [("a", "?")]),
        ([("x",), ("*",), ("a", "b", "*")], [("*",)]),
        ([("b",), ("a",), ()], [(), ("a",), ("b",)]),
        ([("a", "*"), ("a", "b", "*")], [("a", "*")]),
        ([("?", "b"), ("a", "?")], [("?", "b"), ("a", "?")]),
        ([("a", "?", "*"), ("a",)], [("a", "*")]),
        ([("a", "?", "?", "*"), ("a", "?"), ("a",)], [("a", "*")]),
        ([("?", "*"), ()], [("*",)]),
        ([("a", "?", "*")], [("a", "?", "*")]),
        ([("?",), ("a",), ("a", "b")], [("?",), ("a", "b")]),
    ],
)
def test_get_query_types(
    query_types: list[EventType], simplified: list[EventType]
) -> None:
    assert S(query_types).get_query_types() == simplified


def test_get_query_types_is_deterministic() -> None:
    types: list[EventType] = [("c",), ("a", "?"), ("b", "*"), ()]
    assert S(types).get_query_types() == S(reversed(types)).get_query_types()


@pytest.mark.parametrize(
    ("a", "b", "union"),
    [
        ([], [], []),
        ([("a",)], [], [("a",)]),
        ([("a",)], [("b",)], [("a",), ("b",)]),
        ([("a", "b")], [("a", "*")], [("a", "*")]),
        ([("a",)], [("a", "?", "*")], [("a", "*")]),
    ],
)
def test_union(a: list[EventType], b: list[EventType], union: list[EventType]) -> None:
    assert S(a).union(S(b)).get_query_types() == union
    assert S(b).union(S(a)).get_query_types() == union


def test_union_of_many() -> None:
    assert S([("a",)]).union(S([("b",)]), S([("c",)])) == S([("a",), ("b",), ("c",)])
    assert S([("a",)]).union() == S([("a",)])


@pytest.mark.parametrize(
    ("a", "b", "intersection"),
    [
        ([("a", "?")], [("?", "b")], [("a", "b")]),
        ([("a", "*")], [("a", "b", "*")], [("a", "b", "*")]),
        ([("a", "*")], [("?", "c")], [("a", "c")]),
        ([("*",)], [("a",), ("b", "*")], [("a",), ("b", "*")]),
        ([("a",)], [("b",)], []),
        ([("a",)], [("a", "b")], []),
        ([("a", "b")], [("a", "?", "*")], [("a", "b")]),
        ([()], [("*",)], [()]),
        ([()], [("?", "*")], []),
        ([("?", "?")], [("?",)], []),
        ([("a", "*"), ("b", "*")], [("?", "x")], [("a", "x"), ("b", "x")]),
        ([], [("*",)], []),
    ],
)
def test_intersection(
    a: list[EventType], b: list[EventType], intersection: list[EventType]
) -> None:
    assert S(a).intersection(S(b)).get_query_types() == intersection
    assert S(b).intersection(S(a)).get_query_types() == intersection
    assert S(a).isdisjoint(S(b)) is (not intersection)


def test_intersection_of_many() -> None:
    got = S([("?", "?", "*")]).intersection(
        S([("a", "*")]), S([("*",)]), S([("?", "b")])
    )
    assert got.get_query_types() == [("a", "b")]
    assert S([("a",)]).intersection() == S([("a",)])


@pytest.mark.parametrize(
    ("a", "b", "disjoint"),
    [
        ([("a",)], [("b",)], True),
        ([("a", "*")], [("?",)], False),
        ([("a", "*")], [("b", "*")], True),
        ([()], [("a", "*")], True),
        ([()], [("*",)], False),
        ([], [("*",)], True),
        ([("a", "?")], [("?", "b")], False),
        ([("a", "?")], [("a",)], True),
    ],
)
def test_isdisjoint(a: list[EventType], b: list[EventType], disjoint: bool) -> None:
    assert S(a).isdisjoint(S(b)) is disjoint
    assert S(b).isdisjoint(S(a)) is disjoint


def test_equality_and_hash() -> None:
    assert S([("a", "*"), ("a", "b")]) == S([("a", "*")])
    assert S([("a", "b"), ("a", "b")]) == S([("a", "b")])
    assert S([("a",)]) != S([("b",)])
    assert S([]) == S([])
    assert S([]) != S([()])
    assert S([("a",)]) != [("a",)]
    # equal by what they match, also where the simplified forms differ
    x, y = S([("a",), ("?", "?", "*")]), S([("a", "*"), ("?", "?", "*")])
    assert x.get_query_types() != y.get_query_types()
    assert x == y
    assert hash(x) == hash(y)
    assert hash(S([("a", "*"), ("a", "b")])) == hash(S([("a", "*")]))
    assert len({S([("a",)]), S([("a",)]), S([("b",)])}) == 2


def test_repr_iter_bool() -> None:
    sub = S([("b",), ("a", "*")])
    assert repr(sub) == "Subscription([('a', '*'), ('b',)])"
    assert list(sub) == [("a", "*"), ("b",)]
    assert sub
    assert not S([])
    assert sub.issubset(S([("*",)]))
    assert not S([("*",)]).issubset(sub)


def test_text_forms() -> None:
    assert parse_query_type("a/?/*") == ("a", "?", "*")
    assert check_query_type(["a", "?"]) == ("a", "?")
    for bad in ["", "a//b", "*/a", 3]:
        with pytest.raises(ValueError, match=r"query type|segment"):
            parse_query_type(bad)  # type: ignore[arg-type]
    sub = subscription_from_json(["a/*", "a/b", "?"])
    assert sub == S([("a", "*"), ("?",)])
    assert subscription_to_json(sub) == ["?", "a/*"]
    with pytest.raises(ValueError, match="list"):
        subscription_from_json("a/*")
    with pytest.raises(ValueError, match="at most"):
        subscription_from_json(["a"] * 65)


# EventTypeCollection


def test_collection_order_remove_and_two_subscriptions() -> None:
    c: EventTypeCollection[str] = EventTypeCollection()
    assert len(c) == 0
    assert c.get(("a",)) == []
    c.add(S([("a", "*")]), "first")
    c.add(S([("?",)]), "second")
    c.add(S([("a",)]), "third")
    c.add(S([("b",)]), "first")  # a second subscription: keeps its place
    c.add(S([]), "nothing")
    assert len(c) == 4
    assert "nothing" in c
    assert c.get(("a",)) == ["first", "second", "third"]
    assert c.get(("b",)) == ["first", "second"]
    assert c.get(("a", "x")) == ["first"]
    assert c.get(("c",)) == ["second"]
    assert c.get(()) == []
    c.remove("first")
    assert c.get(("a",)) == ["second", "third"]
    assert c.get(("b",)) == ["second"]
    c.remove("first")  # absent: nothing
    c.add(S([("*",)]), "first")  # back, now last
    assert c.get(("a",)) == ["second", "third", "first"]
    assert len(c) == 4


def test_collection_same_value_overlapping_subscriptions_once() -> None:
    c: EventTypeCollection[int] = EventTypeCollection()
    c.add(S([("a", "*"), ("?", "b")]), 1)
    c.add(S([("a", "b")]), 1)
    assert c.get(("a", "b")) == [1]


def test_collection_prunes_its_trie() -> None:
    c: EventTypeCollection[int] = EventTypeCollection()
    for i in range(100):
        c.add(S([("a", str(i), "?", "*"), ("b", str(i))]), i)
    for i in range(100):
        c.remove(i)
    assert len(c) == 0
    root = c._root
    assert not root.children
    assert root.any is None
    assert root.empty()


# properties, against brute force

ALPHABET = ("a", "b", "c", "?", "*")
UNIVERSE: list[EventType] = [
    t for n in range(6) for t in itertools.product(("a", "b", "c", "x"), repeat=n)
]


def brute(query_type: EventType, event_type: EventType) -> bool:
    if query_type and query_type[-1] == "*":
        fixed = query_type[:-1]
        if len(event_type) < len(fixed):
            return False
    else:
        fixed = query_type
        if len(event_type) != len(fixed):
            return False
    return all(q in ("?", s) for q, s in zip(fixed, event_type, strict=False))


def brute_any(query_types: list[EventType], event_type: EventType) -> bool:
    return any(brute(q, event_type) for q in query_types)


def random_query_type(rnd: random.Random) -> EventType:
    n = rnd.randint(0, 4)
    segments = [rnd.choice(ALPHABET[:4]) for _ in range(n)]
    if segments and rnd.random() < 0.4:
        segments[-1] = "*"
    return tuple(segments)


def random_query_types(rnd: random.Random) -> list[EventType]:
    return [random_query_type(rnd) for _ in range(rnd.randint(0, 4))]


def test_random_invalid_star_positions_are_refused() -> None:
    rnd = random.Random(7)
    for _ in range(200):
        n = rnd.randint(2, 5)
        segments = [rnd.choice(ALPHABET) for _ in range(n)]
        bad = "*" in segments[:-1]
        if bad:
            with pytest.raises(ValueError, match="only the last segment"):
                S([tuple(segments)])
        else:
            S([tuple(segments)])


def test_subscriptions_agree_with_brute_force() -> None:
    rnd = random.Random(20240611)
    for _ in range(120):
        qa, qb = random_query_types(rnd), random_query_types(rnd)
        a, b = S(qa), S(qb)
        union, meet = a.union(b), a.intersection(b)
        simplified = S(a.get_query_types())
        in_a = set()
        in_b = set()
        for t in UNIVERSE:
            ma, mb = brute_any(qa, t), brute_any(qb, t)
            assert a.matches(t) is ma, (qa, t)
            assert b.matches(t) is mb, (qb, t)
            assert simplified.matches(t) is ma, (qa, a.get_query_types(), t)
            assert union.matches(t) is (ma or mb), (qa, qb, t)
            assert meet.matches(t) is (ma and mb), (qa, qb, meet, t)
            if ma:
                in_a.add(t)
            if mb:
                in_b.add(t)
        assert a.isdisjoint(b) is in_a.isdisjoint(in_b), (qa, qb)
        # the universe reaches one segment past the longest query type, with
        # a segment none of them names, so it tells any two apart
        assert (a == b) is (in_a == in_b), (qa, qb)
        assert a.issubset(b) is (in_a <= in_b), (qa, qb)
        assert simplified == a
        assert hash(simplified) == hash(a)
        assert a.union(meet) == a
        assert hash(a.union(meet)) == hash(a)
        # simplified means: no query type is covered by another one
        kept = a.get_query_types()
        for p, q in itertools.permutations(kept, 2):
            assert not S([p]).issubset(S([q])), (kept, p, q)


def test_collection_agrees_with_brute_force() -> None:
    rnd = random.Random(99)
    for _ in range(20):
        c: EventTypeCollection[int] = EventTypeCollection()
        model: dict[int, list[EventType]] = {}  # insertion-ordered, like get
        for _ in range(rnd.randint(1, 25)):
            value = rnd.randint(0, 15)
            if rnd.random() < 0.2:
                c.remove(value)
                model.pop(value, None)
                continue
            query_types = random_query_types(rnd)
            c.add(S(query_types), value)
            model.setdefault(value, []).extend(query_types)
        assert len(c) == len(model)
        for t in UNIVERSE:
            expected = [v for v, qs in model.items() if brute_any(qs, t)]
            assert c.get(t) == expected, t
