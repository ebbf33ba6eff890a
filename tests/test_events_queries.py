from __future__ import annotations

import json
import math
from typing import Any

import pytest

from aiohttp_session_ws.events.model import (
    Event,
    EventId,
    EventPayloadJson,
    EventType,
    event_to_json,
)
from aiohttp_session_ws.events.queries import (
    Order,
    OrderBy,
    QueryLatestParams,
    QueryResult,
    QueryTimeseriesParams,
    latest_params_from_json,
    latest_params_to_json,
    result_from_json,
    result_to_json,
    run_latest,
    run_timeseries,
    timeseries_params_from_json,
    timeseries_params_to_json,
)

ASC, DESC = Order.ASCENDING, Order.DESCENDING
BY_SOURCE = OrderBy.SOURCE_TIMESTAMP
P = QueryTimeseriesParams


def ev(n: int, type_: EventType, ts: float, source: float | None = None) -> Event:
    return Event(EventId(1000 + n, n % 3), type_, ts, source, EventPayloadJson(n))


# ids ascending; timestamps grow with ids except events 5 and 6 that share one;
# source timestamps out of order, with ties (2, 7) and holes (3, 8)
EVENTS = [
    ev(0, ("a",), 10.0, 105.0),
    ev(1, ("a", "x"), 11.0, 101.0),
    ev(2, ("b",), 12.0, 103.0),
    ev(3, ("b", "x"), 13.0, None),
    ev(4, ("a", "y"), 14.0, 100.0),
    ev(5, ("c",), 15.0, 104.0),
    ev(6, ("a",), 15.0, 102.0),
    ev(7, ("b", "y", "z"), 16.0, 103.0),
    ev(8, ("c", "x"), 17.0, None),
    ev(9, ("a", "x"), 18.0, 106.0),
]


def nums(result: QueryResult) -> list[int]:
    return [e.id.ms - 1000 for e in result.events]


def run(params: QueryTimeseriesParams, cap: int = 1000) -> QueryResult:
    return run_timeseries(iter(EVENTS), params, cap)


def test_defaults_are_all_newest_first() -> None:
    result = run(P())
    assert nums(result) == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert result.more_follows is False


def test_ascending() -> None:
    assert nums(run(P(order=ASC))) == list(range(10))


def test_timestamp_ties_are_broken_by_id() -> None:
    events = [ev(2, ("a",), 5.0), ev(0, ("a",), 5.0), ev(1, ("a",), 4.0)]
    ordered = sorted(events, key=lambda e: e.id)
    assert nums(run_timeseries(ordered, P(order=ASC), 10)) == [1, 0, 2]
    assert nums(run_timeseries(ordered, P(), 10)) == [2, 0, 1]


@pytest.mark.parametrize(
    ("event_types", "expected"),
    [
        (None, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
        ([], []),
        ([("a",)], [6, 0]),
        ([("a", "?")], [9, 4, 1]),
        ([("a", "*")], [9, 6, 4, 1, 0]),
        ([("?", "x")], [9, 8, 3, 1]),
        ([("b", "*"), ("c",)], [7, 5, 3, 2]),
        ([("?", "?", "?")], [7]),
        ([("*",)], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
        ([("z",)], []),
    ],
)
def test_event_types(event_types: list[EventType] | None, expected: list[int]) -> None:
    assert nums(run(P(event_types=event_types))) == expected


def test_time_bounds_are_inclusive() -> None:
    assert nums(run(P(t_from=12.0, t_to=15.0, order=ASC))) == [2, 3, 4, 5, 6]
    assert nums(run(P(t_from=12.5, order=ASC))) == [3, 4, 5, 6, 7, 8, 9]
    assert nums(run(P(t_to=11.0, order=ASC))) == [0, 1]
    assert nums(run(P(t_from=15.0, t_to=15.0, order=ASC))) == [5, 6]
    assert nums(run(P(t_from=16.0, t_to=12.0))) == []


def test_source_bounds_are_inclusive_and_leave_out_events_without() -> None:
    assert nums(run(P(source_t_from=103.0, order=ASC))) == [0, 2, 5, 7, 9]
    assert nums(run(P(source_t_to=101.0, order=ASC))) == [1, 4]
    assert nums(run(P(source_t_from=102.0, source_t_to=103.0, order=ASC))) == [2, 6, 7]
    # with no source bound, events without a source timestamp are kept
    assert 3 in nums(run(P()))


def test_order_by_source_timestamp() -> None:
    # 3 and 8 have no source timestamp; 2 and 7 tie at 103, broken by id
    assert nums(run(P(order_by=BY_SOURCE, order=ASC))) == [4, 1, 6, 2, 7, 5, 0, 9]
    assert nums(run(P(order_by=BY_SOURCE))) == [9, 0, 5, 7, 2, 6, 1, 4]
    assert nums(run(P(order_by=BY_SOURCE, t_from=12.0, source_t_to=103.0))) == [
        7,
        2,
        6,
        4,
    ]


def test_max_results_and_cap() -> None:
    result = run(P(max_results=3))
    assert (nums(result), result.more_follows) == ([9, 8, 7], True)
    result = run(P(max_results=3), cap=2)
    assert (nums(result), result.more_follows) == ([9, 8], True)
    result = run(P(), cap=4)
    assert (nums(result), result.more_follows) == ([9, 8, 7, 6], True)
    result = run(P(max_results=10))
    assert (len(result.events), result.more_follows) == (10, False)
    result = run(P(event_types=[("a",)], max_results=2))
    assert (nums(result), result.more_follows) == ([6, 0], False)
    with pytest.raises(ValueError, match="cap"):
        run(P(), cap=0)


def pages(params: QueryTimeseriesParams, cap: int = 1000) -> list[list[int]]:
    out: list[list[int]] = []
    while True:
        result = run(params, cap)
        out.append(nums(result))
        if not result.more_follows:
            return out
        assert result.events
        params = QueryTimeseriesParams(
            **{
                **{f: getattr(params, f) for f in P.__dataclass_fields__},
                "last_event_id": result.events[-1].id,
            }
        )


@pytest.mark.parametrize("order", [ASC, DESC])
@pytest.mark.parametrize("order_by", [OrderBy.TIMESTAMP, BY_SOURCE])
@pytest.mark.parametrize(
    "extra",
    [{}, {"event_types": [("a", "*")]}, {"t_from": 12.0, "t_to": 17.0}],
)
@pytest.mark.parametrize(("size", "cap"), [(3, 1000), (None, 2), (4, 3), (1, 1)])
def test_paging_with_last_event_id(
    order: Order, order_by: OrderBy, extra: dict[str, Any], size: int | None, cap: int
) -> None:
    base = P(order=order, order_by=order_by, **extra)
    whole = nums(run(base))
    got = pages(P(order=order, order_by=order_by, max_results=size, **extra), cap)
    step = min(cap, size or cap)
    assert [n for page in got for n in page] == whole
    assert all(len(page) == step for page in got[:-1])
    assert 0 < len(got[-1]) <= step or whole == []


def test_last_event_id_skips_up_to_and_including_it() -> None:
    marker = EVENTS[6].id
    assert nums(run(P(last_event_id=marker))) == [5, 4, 3, 2, 1, 0]
    assert nums(run(P(last_event_id=marker, order=ASC))) == [7, 8, 9]
    # then max_results applies
    result = run(P(last_event_id=marker, max_results=2))
    assert (nums(result), result.more_follows) == ([5, 4], True)
    # the marker needs not match the query
    assert nums(run(P(event_types=[("b", "*")], last_event_id=marker))) == [3, 2]
    assert nums(run(P(last_event_id=EVENTS[0].id))) == []
    by_source = P(order_by=BY_SOURCE, order=ASC, last_event_id=EVENTS[2].id)
    assert nums(run(by_source)) == [7, 5, 0, 9]


def test_last_event_id_of_an_event_no_longer_stored() -> None:
    gone = EventId(1006, 9)  # between events 6 and 7 by id
    assert nums(run(P(last_event_id=gone))) == [6, 5, 4, 3, 2, 1, 0]
    assert nums(run(P(last_event_id=gone, order=ASC))) == [7, 8, 9]
    with pytest.raises(ValueError, match="source timestamp"):
        run(P(order_by=BY_SOURCE, last_event_id=gone))
    with pytest.raises(ValueError, match="source timestamp"):
        run(P(order_by=BY_SOURCE, last_event_id=EVENTS[3].id))  # it has none


def test_params_are_checked() -> None:
    for bad in [0, -1, True, 1.5]:
        with pytest.raises(ValueError, match="max_results"):
            P(max_results=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="order"):
        P(order="ascending")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="last_event_id"):
        P(last_event_id="1-1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="last segment"):
        P(event_types=[("*", "a")])
    with pytest.raises(ValueError, match="at most 64"):
        P(event_types=[("a",)] * 65)
    with pytest.raises(ValueError, match="last segment"):
        QueryLatestParams([("*", "a")])
    assert P(event_types=[["a", "b"]]).event_types == (("a", "b"),)  # type: ignore[list-item]


# latest

LATEST = {e.type: e for e in EVENTS}  # ('a',) is 6, ('a', 'x') is 9


@pytest.mark.parametrize(
    ("event_types", "expected"),
    [
        (None, [2, 3, 4, 5, 6, 7, 8, 9]),
        ([], []),
        ([("a",)], [6]),
        ([("a",), ("b",), ("nope",)], [2, 6]),
        ([("a", "x"), ("a", "x")], [9]),
        ([("a", "?")], [4, 9]),
        ([("a", "*")], [4, 6, 9]),
        ([("?",)], [2, 5, 6]),
        ([("*",)], [2, 3, 4, 5, 6, 7, 8, 9]),
        ([("?", "x"), ("b", "*")], [2, 3, 7, 8, 9]),
        ([()], []),
    ],
)
def test_latest(event_types: list[EventType] | None, expected: list[int]) -> None:
    result = run_latest(LATEST, QueryLatestParams(event_types))
    assert sorted(nums(result)) == expected
    assert nums(result) == sorted(nums(result))  # in id order
    assert result.more_follows is False


def test_latest_of_the_empty_type() -> None:
    e = ev(1, (), 1.0)
    assert run_latest({(): e}, QueryLatestParams([()])).events == [e]
    assert run_latest({(): e}, QueryLatestParams([("?", "*")])).events == []
    assert run_latest({(): e}, QueryLatestParams([("*",)])).events == [e]


# JSON


def test_latest_params_json() -> None:
    assert latest_params_from_json({}) == QueryLatestParams()
    assert latest_params_from_json({"event_types": None}) == QueryLatestParams()
    params = latest_params_from_json({"event_types": ["a/?/*", "b"]})
    assert params.event_types == (("a", "?", "*"), ("b",))
    assert latest_params_from_json(latest_params_to_json(params)) == params


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        (None, "JSON object"),
        ([], "JSON object"),
        ({"types": []}, "has no 'types'"),
        ({"event_types": "a/b"}, "list of query types"),
        ({"event_types": [1]}, "non-empty str"),
        ({"event_types": [""]}, "non-empty str"),
        ({"event_types": ["a//b"]}, "segments are non-empty"),
        ({"event_types": ["*/a"]}, "last segment"),
        ({"event_types": ["a"] * 65}, "at most 64"),
    ],
)
def test_latest_params_json_errors(obj: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        latest_params_from_json(obj)


def test_timeseries_params_json() -> None:
    assert timeseries_params_from_json({}) == P()
    obj = {
        "event_types": ["a/*", "?/x"],
        "t_from": 1,
        "t_to": 2.5,
        "source_t_from": 0,
        "source_t_to": 9.75,
        "order": "ascending",
        "order_by": "source_timestamp",
        "max_results": 7,
        "last_event_id": "1700000000000-3",
    }
    params = timeseries_params_from_json(obj)
    assert params == P(
        event_types=[("a", "*"), ("?", "x")],
        t_from=1.0,
        t_to=2.5,
        source_t_from=0.0,
        source_t_to=9.75,
        order=ASC,
        order_by=BY_SOURCE,
        max_results=7,
        last_event_id=EventId(1700000000000, 3),
    )
    assert isinstance(params.t_from, float)
    wire = json.loads(json.dumps(timeseries_params_to_json(params)))
    assert timeseries_params_from_json(wire) == params
    assert timeseries_params_from_json(timeseries_params_to_json(P())) == P()
    assert timeseries_params_from_json({"order": "descending"}).order is DESC
    assert timeseries_params_from_json({"order_by": "timestamp"}).order_by is (
        OrderBy.TIMESTAMP
    )


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        ("{}", "JSON object"),
        ({"limit": 3}, "has no 'limit'"),
        ({"event_types": {}}, "list of query types"),
        ({"event_types": ["a/*/b"]}, "last segment"),
        ({"t_from": "1"}, "t_from is null or a number"),
        ({"t_to": True}, "t_to is null or a number"),
        ({"source_t_from": math.inf}, "source_t_from is a finite number"),
        ({"source_t_to": math.nan}, "source_t_to is a finite number"),
        ({"order": "up"}, "'descending' or 'ascending'"),
        ({"order": 1}, "'descending' or 'ascending'"),
        ({"order_by": "time"}, "'timestamp' or 'source_timestamp'"),
        ({"order_by": ["timestamp"]}, "'timestamp' or 'source_timestamp'"),
        ({"max_results": 0}, "positive integer"),
        ({"max_results": 1.5}, "positive integer"),
        ({"max_results": True}, "positive integer"),
        ({"max_results": "3"}, "positive integer"),
        ({"last_event_id": "3"}, "'<ms>-<n>'"),
        ({"last_event_id": 3}, "'<ms>-<n>'"),
        ({"last_event_id": "a-1"}, "'<ms>-<n>'"),
    ],
)
def test_timeseries_params_json_errors(obj: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        timeseries_params_from_json(obj)


def test_result_json() -> None:
    result = run(P(max_results=2))
    obj = result_to_json(result)
    assert obj == {
        "events": [event_to_json(EVENTS[9]), event_to_json(EVENTS[8])],
        "more_follows": True,
    }
    assert obj["events"][0]["id"] == "1009-0"
    assert result_from_json(json.loads(json.dumps(obj))) == result
    assert result_to_json(QueryResult([], False)) == {
        "events": [],
        "more_follows": False,
    }
    bads: list[Any] = [None, {"events": []}, {"events": {}, "more_follows": False}]
    for bad in bads:
        with pytest.raises(ValueError, match="query result"):
            result_from_json(bad)
    with pytest.raises(ValueError, match="event"):
        result_from_json({"events": [{"id": "1-1"}], "more_follows": False})
