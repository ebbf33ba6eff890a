"""The event ops of the protocol (see :doc:`/events`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..authorization import REGISTER_EVENT, SUBSCRIBE_EVENTS, Action
from ..peers import Peer, Peers
from ..protocol import (
    Arg,
    ErrorCode,
    FollowUp,
    Op,
    ProtocolError,
    ProtocolLimits,
    Request,
)
from .model import (
    EventId,
    event_to_json,
    format_event_type,
    parse_event_type,
    register_event_from_json,
)
from .queries import (
    latest_params_from_json,
    result_to_json,
    timeseries_params_from_json,
)
from .service import MAX_REGISTER, Events, EventsUnavailableError


def event_ops(
    events: Events, peers: Peers, limits: Callable[[], ProtocolLimits]
) -> list[Op[Peer]]:
    """The event ops, for the registry's op table.

    They are ``register_events``, ``subscribe``, ``unsubscribe``,
    ``query_latest`` and ``query_timeseries``.
    """
    peers.on_discard.append(events.connection_closed)

    async def register(peer: Peer, request: Request) -> dict[str, Any]:
        batch = _batch(request)
        try:
            done = await events.register(batch, with_response=True)
        except EventsUnavailableError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, str(exc)) from None
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_FRAME, str(exc)) from None
        if not request.args.get("response", False):
            return {}
        return {"events": [event_to_json(e) for e in done or ()]}

    def register_actions(peer: Peer, request: Request) -> list[Action]:
        types = {format_event_type(e.type) for e in _batch(request)}
        return [
            Action("register_events", REGISTER_EVENT, event_type=t)
            for t in sorted(types)
        ]

    async def subscribe(peer: Peer, request: Request) -> FollowUp[Peer]:
        args = request.args
        query_types = _query_types(args.get("types"))
        since = _event_id(args.get("since"))
        epoch = args.get("epoch")
        try:
            subscriber, recovered, reason, read = await events.subscribe_connection(
                peer, query_types, since, epoch, limits().max_subscriptions
            )
        except LookupError as exc:
            raise ProtocolError(ErrorCode.LIMIT, str(exc)) from None
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_FRAME, str(exc)) from None
        except EventsUnavailableError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, str(exc)) from None
        result = {
            "subscription": subscriber.id,
            "epoch": read.epoch,
            "position": None if read.last is None else str(read.last),
            "recovered": recovered,
            "reason": reason,
        }

        async def replay(connection: Peer) -> None:
            await events.replay(subscriber, since if recovered else None, read)

        return FollowUp(result, replay)

    def subscribe_actions(peer: Peer, request: Request) -> list[Action]:
        return [
            Action(request.op, SUBSCRIBE_EVENTS, event_type=format_event_type(t))
            for t in _query_types(request.args.get("types"))
        ]

    async def unsubscribe(peer: Peer, request: Request) -> dict[str, Any]:
        return {
            "removed": events.unsubscribe_connection(peer, request.args["subscription"])
        }

    async def query_latest(peer: Peer, request: Request) -> dict[str, Any]:
        try:
            params = latest_params_from_json(request.args)
            return result_to_json(await events.query_latest(params))
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_FRAME, str(exc)) from None
        except EventsUnavailableError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, str(exc)) from None

    async def query_timeseries(peer: Peer, request: Request) -> dict[str, Any]:
        try:
            params = timeseries_params_from_json(request.args)
            return result_to_json(await events.query_timeseries(params))
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_FRAME, str(exc)) from None
        except EventsUnavailableError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, str(exc)) from None

    def query_actions(peer: Peer, request: Request) -> list[Action]:
        types = request.args.get("event_types")
        texts = (
            ["*"]
            if types is None
            else [format_event_type(t) for t in _query_types(types)]
        )
        return [Action(request.op, SUBSCRIBE_EVENTS, event_type=t) for t in texts]

    timeseries_args = {
        name: Arg("any")
        for name in (
            "event_types",
            "t_from",
            "t_to",
            "source_t_from",
            "source_t_to",
            "order",
            "order_by",
            "max_results",
            "last_event_id",
        )
    }
    return [
        Op(
            "register_events",
            register,
            {"events": Arg("array", required=True), "response": Arg("bool")},
            register_actions,
        ),
        Op(
            "subscribe",
            subscribe,
            {
                "types": Arg("array", required=True),
                "since": Arg("str"),
                "epoch": Arg("str"),
            },
            subscribe_actions,
        ),
        Op("unsubscribe", unsubscribe, {"subscription": Arg("int", required=True)}),
        Op("query_latest", query_latest, {"event_types": Arg("any")}, query_actions),
        Op("query_timeseries", query_timeseries, timeseries_args, query_actions),
    ]


def _batch(request: Request) -> list[Any]:
    items = request.args.get("events", [])
    if len(items) > MAX_REGISTER:
        raise ProtocolError(ErrorCode.LIMIT, f"at most {MAX_REGISTER} events at once")
    try:
        return [register_event_from_json(item) for item in items]
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"bad event: {exc}") from None


def _query_types(value: Any) -> list[tuple[str, ...]]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ProtocolError(
            ErrorCode.BAD_FRAME, "types must be a list of 'a/b/*' strings"
        )
    try:
        return [_query_type(t) for t in value]
    except ValueError as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, str(exc)) from None


def _query_type(text: str) -> tuple[str, ...]:
    """A query type as text: segments, '?' and a last '*' allowed."""
    if text == "":
        return ()
    segments = tuple(text.split("/"))
    plain = [s for s in segments if s not in ("?", "*")]
    if plain:
        parse_event_type("/".join(plain))  # the other segments' rules
    return segments


def _event_id(value: Any) -> EventId | None:
    if value is None:
        return None
    try:
        return EventId.parse(value)
    except ValueError as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, str(exc)) from None
