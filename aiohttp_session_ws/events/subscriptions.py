"""Subscriptions: sets of event types written with wildcards (pure, no I/O).

A *query type* is an event type whose segments may also be the wildcards
``?`` (exactly one segment) and ``*`` (zero or more trailing segments, only
as the last segment). A :class:`Subscription` is a set of query types; it
matches an event type when one of them does. The query type ``()`` matches
only the event type ``()``; a subscription without query types matches
nothing. This is the meaning of hat-event's ``Subscription``.

:class:`EventTypeCollection` indexes many subscriptions, so that the
subscribers of one event are found without looking at every subscription.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from .model import EventType, check_event_type, format_event_type

__all__ = [
    "MAX_QUERY_TYPES",
    "EventTypeCollection",
    "Subscription",
    "check_query_type",
    "parse_query_type",
    "subscription_from_json",
    "subscription_to_json",
]

MAX_QUERY_TYPES = 64
"""The most query types a :class:`Subscription` is built from."""

_ANY = "?"
_STAR = "*"
_FRESH = ""
# a segment no query type holds (segments are non-empty): only `?` and `*`
# match it, which makes it a witness for "every segment here"

T = TypeVar("T", bound=Hashable)


def check_query_type(query_type: object) -> EventType:
    """Return ``query_type`` as a tuple if it is a valid query type.

    It is an event type (see :func:`~.model.check_event_type`, at most
    :data:`~.model.MAX_SEGMENTS` segments) whose segments may also be ``?``
    or ``*``, ``*`` only as the last one.

    :raises ValueError: it is not.
    """
    if isinstance(query_type, str) or not isinstance(query_type, (tuple, list)):
        raise ValueError(
            f"a query type is a tuple of str segments, not {query_type!r:.60}"
            " (parse_query_type() reads 'a/?/*')"
        )
    # the wildcards stand in for a valid segment while the rest is checked
    check_event_type(
        tuple("x" if segment in (_ANY, _STAR) else segment for segment in query_type)
    )
    result = tuple(query_type)
    if _STAR in result[:-1]:
        raise ValueError(
            f"'*' is only the last segment of a query type: {result!r:.80}"
        )
    return result


def parse_query_type(text: str) -> EventType:
    """The query type written ``a/?/*``.

    :raises ValueError: it is not a valid query type.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"a query type text is a non-empty str, not {text!r:.60}")
    return check_query_type(tuple(text.split("/")))


def _split(pattern: EventType) -> tuple[EventType, bool]:
    """The fixed segments of a query type and whether it ends in ``*``."""
    if pattern and pattern[-1] == _STAR:
        return pattern[:-1], True
    return pattern, False


def _meet(p: EventType, q: EventType) -> EventType | None:
    """The query type matching what both match, ``None`` if nothing."""
    fp, p_star = _split(p)
    fq, q_star = _split(q)
    if (not p_star and len(fp) < len(fq)) or (not q_star and len(fq) < len(fp)):
        return None
    segments: list[str] = []
    for i in range(max(len(fp), len(fq))):
        a = fp[i] if i < len(fp) else _ANY  # covered by p's `*`
        b = fq[i] if i < len(fq) else _ANY
        if a == _ANY:
            segments.append(b)
        elif b in (_ANY, a):
            segments.append(a)
        else:
            return None
    if p_star and q_star:
        segments.append(_STAR)
    return tuple(segments)


class _Node:
    """A trie node over query segments (for :class:`Subscription`)."""

    __slots__ = ("any", "children", "leaf", "star")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.any: _Node | None = None  # the `?` branch
        self.leaf = False  # a query type ends here
        self.star = False  # a query type ends here with `*`

    def add(self, pattern: EventType) -> None:
        node = self
        fixed, star = _split(pattern)
        for segment in fixed:
            if segment == _ANY:
                if node.any is None:
                    node.any = _Node()
                node = node.any
            else:
                node = node.children.setdefault(segment, _Node())
        if star:
            node.star = True
        else:
            node.leaf = True

    def matches(self, event_type: EventType) -> bool:
        # each node sits at one depth, so each is visited at most once
        size = len(event_type)
        stack: list[tuple[_Node, int]] = [(self, 0)]
        while stack:
            node, i = stack.pop()
            if node.star:
                return True
            if i == size:
                if node.leaf:
                    return True
                continue
            if node.any is not None:
                stack.append((node.any, i + 1))
            child = node.children.get(event_type[i])
            if child is not None:
                stack.append((child, i + 1))
        return False

    def covered(self, pattern: EventType) -> bool:
        """Whether a query type in this trie other than ``pattern`` covers it."""
        fixed, p_star = _split(pattern)
        stack: list[tuple[_Node, int, bool]] = [(self, 0, True)]
        while stack:
            node, i, exact = stack.pop()
            if node.star and not (exact and i == len(fixed) and p_star):
                return True
            if i == len(fixed):
                # a fixed query type here covers a fixed `pattern` it is not
                if node.leaf and not p_star and not exact:
                    return True
                continue
            segment = fixed[i]
            if node.any is not None:
                stack.append((node.any, i + 1, exact and segment == _ANY))
            if segment != _ANY:
                child = node.children.get(segment)
                if child is not None:
                    stack.append((child, i + 1, exact))
        return False


def _trie(patterns: Iterable[EventType]) -> _Node:
    root = _Node()
    for pattern in patterns:
        root.add(pattern)
    return root


def _witness(fixed: EventType) -> EventType:
    return tuple(_FRESH if segment == _ANY else segment for segment in fixed)


def _contains(root: _Node, max_fixed: int, pattern: EventType) -> bool:
    """Whether the query types in ``root`` match all ``pattern`` matches.

    ``max_fixed`` is the most fixed segments of those query types. The
    alphabet of segments is infinite, so a fixed query type is inside a union
    exactly when its witness (each ``?`` a segment no query type names) is
    matched; a ``*`` is checked length by length up to where lengths stop
    mattering.
    """
    fixed, star = _split(pattern)
    witness = _witness(fixed)
    if not star:
        return root.matches(witness)
    extra = max(0, max_fixed + 1 - len(fixed))
    return all(root.matches(witness + (_FRESH,) * k) for k in range(extra + 1))


def _simplify(patterns: Iterable[EventType]) -> list[EventType]:
    """Equivalent query types, none covered by another, in sorted order."""
    unique = set(patterns)
    if not unique:
        return []
    root = _trie(unique)
    # a*, a/?*, ... : widen `x/?/*` to `x/*` while `x` itself is matched
    widened: set[EventType] = set()
    for pattern in unique:
        fixed, star = _split(pattern)
        if star:
            while fixed and fixed[-1] == _ANY and root.matches(_witness(fixed[:-1])):
                fixed = fixed[:-1]
            widened.add((*fixed, _STAR))
        else:
            widened.add(pattern)
    root = _trie(widened)
    return sorted(pattern for pattern in widened if not root.covered(pattern))


class Subscription:
    """A set of query types; matches the event types any of them matches.

    ``?`` matches exactly one segment, ``*`` zero or more trailing segments
    (only as the last segment), ``()`` matches only ``()``, and no query
    types match nothing. Matching walks a trie compiled here, not the list.

    :param query_types: at most :data:`MAX_QUERY_TYPES` query types (see
        :func:`check_query_type`).
    :raises ValueError: a query type is not valid, or there are too many.
    """

    __slots__ = ("_max_fixed", "_query_types", "_root")

    def __init__(self, query_types: Iterable[EventType]) -> None:
        given = list(itertools.islice(query_types, MAX_QUERY_TYPES + 1))
        if len(given) > MAX_QUERY_TYPES:
            raise ValueError(
                f"a subscription has at most {MAX_QUERY_TYPES} query types"
            )
        self._set(_simplify(check_query_type(q) for q in given))

    @classmethod
    def _of(cls, patterns: Iterable[EventType]) -> Subscription:
        """A subscription of valid query types, without the count limit."""
        self = cls.__new__(cls)
        self._set(_simplify(patterns))
        return self

    def _set(self, simplified: list[EventType]) -> None:
        self._query_types = tuple(simplified)
        self._root = _trie(simplified)
        self._max_fixed = max((len(_split(q)[0]) for q in simplified), default=0)

    def matches(self, event_type: EventType) -> bool:
        """Whether the subscription matches ``event_type``."""
        return self._root.matches(event_type)

    def get_query_types(self) -> list[EventType]:
        """The query types, simplified and sorted.

        Duplicates and query types covered by another one are left out
        (``a/*`` covers ``a/b`` and ``a/?``), and ``x/?/*`` becomes ``x/*``
        when ``x`` is matched too; what is matched does not change.
        """
        return list(self._query_types)

    def union(self, *others: Subscription) -> Subscription:
        """The subscription matching what this or any of ``others`` matches."""
        patterns = list(self._query_types)
        for other in others:
            patterns.extend(other._query_types)
        return Subscription._of(patterns)

    def intersection(self, *others: Subscription) -> Subscription:
        """The subscription matching exactly what this and all ``others`` match.

        ``a/?`` ∩ ``?/b`` is ``a/b``; ``a/*`` ∩ ``a/b/*`` is ``a/b/*``.
        """
        result: Subscription = self
        for other in others:
            meets = (
                _meet(p, q) for p in result._query_types for q in other._query_types
            )
            result = Subscription._of(m for m in meets if m is not None)
        return result

    def isdisjoint(self, other: Subscription) -> bool:
        """Whether no event type is matched by both subscriptions."""
        return all(
            _meet(p, q) is None for p in self._query_types for q in other._query_types
        )

    def issubset(self, other: Subscription) -> bool:
        """Whether ``other`` matches every event type this one matches."""
        return all(
            _contains(other._root, other._max_fixed, q) for q in self._query_types
        )

    def __eq__(self, other: object) -> bool:
        """Equal when they match the same event types."""
        if not isinstance(other, Subscription):
            return NotImplemented
        if self._query_types == other._query_types:
            return True
        return self.issubset(other) and other.issubset(self)

    def __hash__(self) -> int:
        # which lengths are matched whole: the same for equal subscriptions
        full = [self._root.matches((_FRESH,) * n) for n in range(self._max_fixed + 2)]
        while len(full) > 1 and full[-1] == full[-2]:
            full.pop()
        return hash(tuple(full))

    def __repr__(self) -> str:
        return f"Subscription({list(self._query_types)!r})"

    def __iter__(self) -> Iterator[EventType]:
        """The simplified query types."""
        return iter(self._query_types)

    def __bool__(self) -> bool:
        """Whether it matches anything."""
        return bool(self._query_types)


def subscription_from_json(value: Any) -> Subscription:
    """A subscription from its JSON form: a list of texts ``'a/?/*'``.

    :raises ValueError: it is not one, or it is over the limits.
    """
    if not isinstance(value, list):
        raise ValueError("a subscription is a list of query types as text 'a/?/*'")
    if len(value) > MAX_QUERY_TYPES:
        raise ValueError(f"a subscription has at most {MAX_QUERY_TYPES} query types")
    return Subscription(parse_query_type(text) for text in value)


def subscription_to_json(subscription: Subscription) -> list[str]:
    """The JSON form of a subscription: its simplified query types as text."""
    return [format_event_type(q) for q in subscription.get_query_types()]


class _CNode(Generic[T]):
    """A trie node of :class:`EventTypeCollection`."""

    __slots__ = ("any", "children", "leaf", "star")

    def __init__(self) -> None:
        self.children: dict[str, _CNode[T]] = {}
        self.any: _CNode[T] | None = None
        self.leaf: set[T] = set()  # values of query types ending here
        self.star: set[T] = set()  # values of query types ending here in `*`

    def empty(self) -> bool:
        return not (self.children or self.any or self.leaf or self.star)


class EventTypeCollection(Generic[T]):
    """Values, each with subscriptions; finds the values matching an event type.

    The query types are kept in one trie with ``?`` and ``*`` branches, so
    :meth:`get` visits only the branches an event type can take (at most
    the nodes of the trie at its depths), not every subscription. Nodes no
    value needs are removed with the value.
    """

    __slots__ = ("_order", "_patterns", "_root", "_ticket")

    def __init__(self) -> None:
        self._root: _CNode[T] = _CNode()
        self._patterns: dict[T, set[EventType]] = {}
        self._order: dict[T, int] = {}
        self._ticket = itertools.count()

    def __len__(self) -> int:
        """How many values there are."""
        return len(self._patterns)

    def __contains__(self, value: object) -> bool:
        """Whether ``value`` was added (and not removed)."""
        return value in self._patterns

    def add(self, subscription: Subscription, value: T) -> None:
        """Add ``value`` for the event types ``subscription`` matches.

        A value added again keeps its place and matches what either
        subscription matches.
        """
        patterns = self._patterns.get(value)
        if patterns is None:
            patterns = self._patterns[value] = set()
            self._order[value] = next(self._ticket)
        for pattern in subscription.get_query_types():
            if pattern in patterns:
                continue
            patterns.add(pattern)
            node = self._root
            fixed, star = _split(pattern)
            for segment in fixed:
                if segment == _ANY:
                    if node.any is None:
                        node.any = _CNode()
                    node = node.any
                else:
                    node = node.children.setdefault(segment, _CNode())
            (node.star if star else node.leaf).add(value)

    def remove(self, value: T) -> None:
        """Remove ``value`` with all its subscriptions (nothing if absent)."""
        patterns = self._patterns.pop(value, None)
        if patterns is None:
            return
        del self._order[value]
        for pattern in patterns:
            fixed, star = _split(pattern)
            path: list[tuple[_CNode[T], str]] = []
            node: _CNode[T] | None = self._root
            for segment in fixed:
                assert node is not None
                path.append((node, segment))
                node = node.any if segment == _ANY else node.children.get(segment)
            assert node is not None
            (node.star if star else node.leaf).discard(value)
            for parent, segment in reversed(path):
                if not node.empty():
                    break
                if segment == _ANY:
                    parent.any = None
                else:
                    del parent.children[segment]
                node = parent

    def get(self, event_type: EventType) -> list[T]:
        """The values whose subscriptions match ``event_type``.

        In the order they were first added, each once.
        """
        found: set[T] = set()
        size = len(event_type)
        stack: list[tuple[_CNode[T], int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            found.update(node.star)
            if i == size:
                found.update(node.leaf)
                continue
            if node.any is not None:
                stack.append((node.any, i + 1))
            child = node.children.get(event_type[i])
            if child is not None:
                stack.append((child, i + 1))
        if len(found) < 2:
            return list(found)
        return sorted(found, key=self._order.__getitem__)
