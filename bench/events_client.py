"""The load client's connections for the event scenarios.

:class:`EventsWire` speaks our protocol at ``/live`` directly (``subscribe``,
``register_events``) and reads ``events`` frames: for each subscription it
counts the events, checks that their ids strictly increase, notes a
``missed`` count, and tells the scenario when each event arrived (the
load client's ``perf_counter``, taken before the frame is parsed). With
:meth:`EventsWire.open_raw` it reads the floor's ``/ws`` the same way (the
floor's frames have the shape of ours, subscription 1). Every wait is
bounded by :data:`~bench.client.TIMEOUT`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp

from .messaging_client import OursWire, WireError
from .push_common import clock

RAW_PATH = "/ws"
Arrival = Callable[[dict[str, Any], float, bool], None]
"""Called with each event (its JSON), when its frame arrived, and ``replay``."""


def _order(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


class Tracked:
    """One subscription as the client sees it."""

    def __init__(self, on_event: Arrival | None = None, ordered: bool = True) -> None:
        self.ordered = ordered
        """Whether ids must increase (the floor sends one frame over and over)."""
        self.count = 0
        self.replayed = 0
        self.missed = 0
        self.out_of_order = 0
        self.last: tuple[int, int] | None = None
        self.on_event = on_event

    def take(self, frame: dict[str, Any], at: float) -> None:
        """The events of one frame."""
        replay = bool(frame.get("replay"))
        self.missed += int(frame.get("missed", 0))
        on_event = self.on_event
        for event in frame["events"]:
            order = _order(event["id"])
            if self.ordered and self.last is not None and order <= self.last:
                self.out_of_order += 1
            self.last = order
            self.count += 1
            if replay:
                self.replayed += 1
            if on_event is not None:
                on_event(event, at, replay)


class EventsWire(OursWire):
    """A protocol connection with subscriptions (or a raw floor socket)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, hello: dict[str, Any]):
        super().__init__(ws, hello)
        self.subscriptions: dict[int, Tracked] = {}
        self.lost = 0
        self.stray = 0
        """Event frames of no known subscription."""
        self._subscribing: dict[int, Tracked] = {}

    @classmethod
    async def open_raw(cls, http: aiohttp.ClientSession, base_url: str) -> EventsWire:
        """A socket of the floor's ``/ws``: its frames are of subscription 1."""
        ws = await http.ws_connect(base_url + RAW_PATH)
        wire = cls(ws, {"session": ""})
        wire.subscriptions[1] = Tracked(ordered=False)
        return wire

    async def frame(self, text: str) -> None:
        """Events frames to their subscription; the rest as :class:`OursWire`."""
        at = clock()
        if text.startswith('{"op":"events"'):
            frame = json.loads(text)
            found = self.subscriptions.get(frame.get("subscription"))
            if found is None:
                self.stray += 1
            else:
                found.take(frame, at)
            return
        if text.startswith('{"op":"events_lost"'):
            self.lost += 1
            return
        if text.startswith('{"op":"result"'):
            # track the subscription before the reader reads on: its replay's
            # first frame may be next in the buffer
            frame = json.loads(text)
            tracked = self._subscribing.get(frame.get("id"))
            data = frame.get("data")
            if tracked is not None and isinstance(data, dict):
                self.subscriptions[int(data["subscription"])] = tracked
        await super().frame(text)

    async def subscribe(
        self,
        types: list[str],
        since: str | None = None,
        on_event: Arrival | None = None,
        epoch: str | None = None,
    ) -> tuple[Tracked, dict[str, Any]]:
        """``subscribe``; the subscription is tracked before its replay comes."""
        number, future = self.expect()
        args: dict[str, Any] = {"types": types}
        if since is not None:
            args["since"] = since
        if epoch is not None:
            args["epoch"] = epoch
        tracked = self._subscribing[number] = Tracked(on_event)
        try:
            await self.ws.send_str(
                json.dumps({"op": "subscribe", "id": number, **args})
            )
            result = await self.wait(future)
        finally:
            self._subscribing.pop(number, None)
        return tracked, result

    async def unsubscribe(self, subscription: int) -> None:
        """``unsubscribe``; forget it."""
        await self.call("unsubscribe", subscription=subscription)
        self.subscriptions.pop(subscription, None)

    async def register(self, events: list[dict[str, Any]]) -> float:
        """``register_events`` (no response); the clock just before the send."""
        number, future = self.expect()
        frame = json.dumps({"op": "register_events", "id": number, "events": events})
        started = clock()
        await self.ws.send_str(frame)
        await self.wait(future)
        return started


__all__ = ["EventsWire", "Tracked", "WireError"]
