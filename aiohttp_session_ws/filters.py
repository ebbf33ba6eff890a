"""Session filters: a small boolean language over session properties.

:func:`parse_filter` turns a filter such as ``$Principal eq 'ann' and
hasRoles 'admin'`` into a :class:`SessionFilter`, whose
:meth:`~SessionFilter.matches` tells whether a session's properties satisfy
it. Parsing is pure and bounded (length, nesting, clauses, list items,
regular expressions) so that a filter sent by a client cannot make the
server spin; every problem is a :class:`FilterSyntaxError` with the index
where it was found. ``docs/filters.rst`` is the reference.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, NoReturn


def _regex_parser() -> Any:
    """The module of ``re`` that parses patterns (private, hence no stubs)."""
    try:
        return importlib.import_module("re._parser")  # Python 3.11+
    except ImportError:  # pragma: no cover - Python 3.10
        return importlib.import_module("sre_parse")


_sre_parse = _regex_parser()

__all__ = [
    "MAX_CLAUSES",
    "MAX_DEPTH",
    "MAX_FILTER_LENGTH",
    "MAX_LIST_ITEMS",
    "MAX_REGEX_LENGTH",
    "FilterSyntaxError",
    "SessionFilter",
    "parse_filter",
]

MAX_FILTER_LENGTH: Final = 4096
"""The longest filter text accepted, in characters."""

MAX_DEPTH: Final = 32
"""How deeply ``not`` and parentheses may nest."""

MAX_CLAUSES: Final = 256
"""The most clauses (``all``, comparisons, ``has``, ``hasRoles``) in a filter."""

MAX_LIST_ITEMS: Final = 256
"""The most strings in one ``in`` or ``hasRoles`` list."""

MAX_REGEX_LENGTH: Final = 256
"""The longest ``matches`` pattern, in characters (after unescaping)."""

_CACHE_SIZE: Final = 1024

_ROLES: Final = "$Roles"

Properties = Mapping[str, str]
_Match = Callable[[Properties], bool]


class FilterSyntaxError(ValueError):
    """A filter text that does not parse, or breaks one of the bounds.

    :attr:`reason` says what is wrong, :attr:`position` is the 0-based index
    into the text where it was found; ``str()`` gives both.
    """

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(reason, position)
        self.reason = reason
        self.position = position

    def __str__(self) -> str:
        return f"{self.reason} at {self.position}"


class SessionFilter:
    """A parsed session filter; immutable, so one object can be shared.

    Made by :func:`parse_filter`, not directly.
    """

    __slots__ = ("_keys", "_match", "_needs_user", "_text")

    _text: str
    _keys: frozenset[str]
    _needs_user: bool
    _match: _Match

    def __init__(self, text: str, keys: frozenset[str], match: _Match) -> None:
        set_ = object.__setattr__
        set_(self, "_text", text)
        set_(self, "_keys", keys)
        set_(self, "_needs_user", any(not key.startswith("$") for key in keys))
        set_(self, "_match", match)

    @property
    def text(self) -> str:
        """The filter text, as given to :func:`parse_filter`."""
        return self._text

    @property
    def keys(self) -> frozenset[str]:
        """The property keys the filter reads (``hasRoles`` reads ``$Roles``)."""
        return self._keys

    @property
    def needs_user_properties(self) -> bool:
        """Whether the filter reads a user property (a key without ``$``)."""
        return self._needs_user

    def matches(self, properties: Properties) -> bool:
        """Whether a session with these properties satisfies the filter."""
        return self._match(properties)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __copy__(self) -> SessionFilter:
        return self

    def __deepcopy__(self, memo: object) -> SessionFilter:
        return self

    def __reduce__(self) -> tuple[Callable[[str], SessionFilter], tuple[str]]:
        return parse_filter, (self._text,)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SessionFilter):
            return self._text == other._text
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._text)

    def __repr__(self) -> str:
        return f"SessionFilter({self._text!r})"


def parse_filter(text: str) -> SessionFilter:
    """Parse a session filter; the result for a text is cached and shared.

    :raises FilterSyntaxError: the text does not parse or breaks a bound.
    :raises TypeError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"a session filter must be a str, not {type(text).__name__}")
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterSyntaxError(
            f"the filter is over {MAX_FILTER_LENGTH} characters", MAX_FILTER_LENGTH
        )
    return _parse_cached(str(text))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse_cached(text: str) -> SessionFilter:
    parser = _Parser(text)
    match = parser.parse()
    return SessionFilter(text, frozenset(parser.keys), match)


# --- tokens -------------------------------------------------------------------

_WORD, _STR, _PUNCT, _END, _ERROR = range(5)

_Token = tuple[int, str, int]
"""(kind, value, position); for _PUNCT the value is the character, for _ERROR
the reason, for _STR the unescaped content."""

_DELIMITERS: Final = frozenset("'\"()[],")
_ESCAPABLE: Final = frozenset("'\"\\")

_OPERATORS: Final = frozenset({"is", "eq", "ne", "matches", "in"})
_KEYWORDS: Final = _OPERATORS | {"or", "and", "not", "all", "has", "hasroles"}


def _tokens(text: str) -> Iterator[_Token]:
    """Split ``text``; a lexical error becomes one last _ERROR token."""
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i == n:
            yield (_END, "", n)
            return
        char = text[i]
        if char in "'\"":
            start, i = i, i + 1
            parts: list[str] = []
            while True:
                if i >= n:
                    yield (
                        _ERROR,
                        f"unclosed string: the {char} quote is never closed",
                        start,
                    )
                    return
                c = text[i]
                if c == char:
                    i += 1
                    break
                if c == "\\" and i + 1 < n:
                    following = text[i + 1]
                    # \' \" \\ are escapes; any other backslash is kept
                    parts.append(
                        following if following in _ESCAPABLE else text[i : i + 2]
                    )
                    i += 2
                    continue
                parts.append(c)
                i += 1
            yield (_STR, "".join(parts), start)
        elif char in _DELIMITERS:
            yield (_PUNCT, char, i)
            i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in _DELIMITERS:
                i += 1
            yield (_WORD, text[start:i], start)


def _keyword(token: _Token) -> str | None:
    """The keyword a word token spells (ASCII, any case), else None."""
    kind, value, _ = token
    if kind == _WORD and value.isascii():
        lowered = value.lower()
        if lowered in _KEYWORDS:
            return lowered
    return None


def _describe(token: _Token) -> str:
    kind, value, _ = token
    if kind == _END:
        return "the end of the filter"
    if kind == _STR:
        return "a quoted string"
    if kind == _WORD and len(value) > 40:
        return repr(value[:40] + "...")
    return repr(value)


# --- parser -------------------------------------------------------------------


class _Parser:
    """Recursive descent over the token list; depth is bounded by MAX_DEPTH."""

    def __init__(self, text: str) -> None:
        self.tokens = list(_tokens(text))
        self.index = 0
        self.depth = 0
        self.clauses = 0
        self.keys: set[str] = set()

    def peek(self, ahead: int = 0) -> _Token:
        index = min(self.index + ahead, len(self.tokens) - 1)
        return self.tokens[index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token[0] not in (_END, _ERROR):
            self.index += 1
        return token

    def fail(self, expected: str, token: _Token) -> NoReturn:
        if token[0] == _ERROR:
            raise FilterSyntaxError(token[1], token[2])
        raise FilterSyntaxError(f"{expected}, found {_describe(token)}", token[2])

    def is_punct(self, token: _Token, char: str) -> bool:
        return token[0] == _PUNCT and token[1] == char

    def parse(self) -> _Match:
        match = self.parse_or()
        token = self.peek()
        if token[0] != _END:
            if self.is_punct(token, ")"):
                raise FilterSyntaxError("unmatched ')'", token[2])
            self.fail("expected 'and', 'or' or the end of the filter", token)
        return match

    def parse_or(self) -> _Match:
        operands = [self.parse_and()]
        while _keyword(self.peek()) == "or":
            self.advance()
            operands.append(self.parse_and())
        return _any(operands)

    def parse_and(self) -> _Match:
        operands = [self.parse_unary()]
        while _keyword(self.peek()) == "and":
            self.advance()
            operands.append(self.parse_unary())
        return _all(operands)

    def enter(self, token: _Token) -> None:
        if self.depth >= MAX_DEPTH:
            raise FilterSyntaxError(
                f"'not' and parentheses nest deeper than {MAX_DEPTH}", token[2]
            )
        self.depth += 1

    def parse_unary(self) -> _Match:
        token = self.peek()
        if self.is_punct(token, "("):
            self.enter(token)
            self.advance()
            inner = self.parse_or()
            closing = self.peek()
            if not self.is_punct(closing, ")"):
                if closing[0] == _END:
                    raise FilterSyntaxError("unclosed '('", token[2])
                self.fail("expected 'and', 'or' or ')'", closing)
            self.advance()
            self.depth -= 1
            return inner
        if _keyword(token) == "not" and not self.reads_as_key():
            self.enter(token)
            self.advance()
            operand = self.parse_unary()
            self.depth -= 1
            return _negate(operand)
        return self.parse_clause()

    def reads_as_key(self) -> bool:
        """Whether the keyword at hand is a key: an operator and a value follow."""
        operator, value = self.peek(1), self.peek(2)
        return _keyword(operator) in _OPERATORS and (
            value[0] == _STR or self.is_punct(value, "[")
        )

    def parse_clause(self) -> _Match:
        token = self.peek()
        if token[0] != _WORD:
            self.fail(
                "expected a clause (a property key, 'all', 'has', 'hasRoles', "
                "'not' or '(')",
                token,
            )
        self.clauses += 1
        if self.clauses > MAX_CLAUSES:
            raise FilterSyntaxError(f"more than {MAX_CLAUSES} clauses", token[2])
        keyword = _keyword(token)
        if keyword is not None and not self.reads_as_key():
            self.advance()
            if keyword == "all":
                return _always
            if keyword == "has":
                return _has(self.key(self.advance_key(token)))
            if keyword == "hasroles":
                self.keys.add(_ROLES)
                return _has_roles(frozenset(self.parse_list(token)))
            raise FilterSyntaxError(
                f"expected a clause, found the keyword {token[1]!r}", token[2]
            )
        self.advance()
        key = self.key(token)
        operator = self.peek()
        op = _keyword(operator)
        if op not in _OPERATORS:
            self.fail(
                f"expected an operator (is, eq, ne, matches or in) after {key!r}",
                operator,
            )
        self.advance()
        if op == "in":
            return _in(key, frozenset(self.parse_list(operator)))
        value = self.peek()
        if value[0] != _STR:
            self.fail(f"expected a quoted string after {operator[1]!r}", value)
        self.advance()
        if op == "ne":
            return _ne(key, value[1])
        if op == "matches":
            return _matches(key, _compile_regex(value[1], value[2]))
        return _eq(key, value[1])

    def advance_key(self, keyword: _Token) -> _Token:
        token = self.peek()
        if token[0] != _WORD:
            self.fail(f"expected a property key after {keyword[1]!r}", token)
        return self.advance()

    def key(self, token: _Token) -> str:
        name = token[1]
        if name == "$":
            raise FilterSyntaxError("'$' alone is not a property key", token[2])
        self.keys.add(name)
        return name

    def parse_list(self, after: _Token) -> list[str]:
        """``[ str ([,] str)* ]``, ``[]``, or the bare ``str ([,] str)*``."""
        items: list[str] = []
        opening = self.peek()
        bracketed = self.is_punct(opening, "[")
        if bracketed:
            self.advance()
            if self.is_punct(self.peek(), "]"):
                self.advance()
                return items
        first = self.peek()
        if first[0] != _STR:
            if bracketed:
                self.fail("expected a quoted string or ']' in the list", first)
            self.fail(f"expected a quoted string or '[' after {after[1]!r}", first)
        items.append(self.advance()[1])
        while True:
            token = self.peek()
            if self.is_punct(token, ","):
                self.advance()
                token = self.peek()
                if token[0] != _STR:
                    self.fail("expected a quoted string after ','", token)
            elif token[0] != _STR:
                break
            if len(items) >= MAX_LIST_ITEMS:
                raise FilterSyntaxError(
                    f"a list holds more than {MAX_LIST_ITEMS} items", token[2]
                )
            items.append(self.advance()[1])
        if bracketed:
            if token[0] == _END:
                raise FilterSyntaxError("unclosed '['", opening[2])
            if not self.is_punct(token, "]"):
                self.fail("expected ',', a quoted string or ']' in the list", token)
            self.advance()
        return items


# --- regular expressions ------------------------------------------------------

_REPEATS: Final = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})


def _compile_regex(pattern: str, position: int) -> re.Pattern[str]:
    """Compile a ``matches`` pattern, refusing what could backtrack for ages."""
    if len(pattern) > MAX_REGEX_LENGTH:
        raise FilterSyntaxError(
            f"the regular expression is over {MAX_REGEX_LENGTH} characters", position
        )
    try:
        parsed = _sre_parse.parse(pattern)
    # re's internals raise re.error, but also OverflowError, RecursionError...
    except Exception as exc:
        raise FilterSyntaxError(
            f"invalid regular expression: {_reason(exc)}", position
        ) from None
    problem = _regex_problem(parsed)
    if problem:
        raise FilterSyntaxError(f"regular expression refused: {problem}", position)
    try:
        return re.compile(pattern)
    except Exception as exc:
        raise FilterSyntaxError(
            f"invalid regular expression: {_reason(exc)}", position
        ) from None


def _reason(exc: Exception) -> str:
    message = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    return str(message)


def _regex_problem(parsed: Any) -> str | None:
    """Walk the parsed pattern (no recursion); say what is refused, if anything.

    Refused: backreferences and conditionals, a quantifier inside a group that
    repeats more than once, an alternation inside such a group.
    """
    stack: list[tuple[Any, bool]] = [(parsed, False)]
    while stack:
        items, repeated = stack.pop()
        for op, av in items:
            name = getattr(op, "name", str(op))
            if name.startswith("GROUPREF"):  # \\1, (?P=name), (?(1)...)
                return "backreferences and conditional groups are not allowed"
            if name in _REPEATS:
                if repeated:
                    return (
                        "a repeated group holds another quantifier "
                        "(nested repeats can backtrack exponentially)"
                    )
                _low, high, body = av
                stack.append((body, high > 1))
            elif name == "BRANCH":
                if repeated:
                    return (
                        "a repeated group holds an alternation "
                        "(it can backtrack exponentially)"
                    )
                stack.extend((branch, repeated) for branch in av[1])
            elif name == "SUBPATTERN":
                stack.append((av[-1], repeated))
            elif name in ("ASSERT", "ASSERT_NOT"):
                stack.append((av[1], repeated))
            elif name == "ATOMIC_GROUP":
                stack.append((av, repeated))
    return None


# --- evaluation ---------------------------------------------------------------


def _always(properties: Properties) -> bool:
    return True


def _any(operands: list[_Match]) -> _Match:
    if len(operands) == 1:
        return operands[0]
    if len(operands) == 2:
        first, second = operands

        def either(properties: Properties) -> bool:
            return first(properties) or second(properties)

        return either
    branches = tuple(operands)

    def any_of(properties: Properties) -> bool:
        for branch in branches:  # noqa: SIM110 - faster than any()/all()
            if branch(properties):
                return True
        return False

    return any_of


def _all(operands: list[_Match]) -> _Match:
    if len(operands) == 1:
        return operands[0]
    if len(operands) == 2:
        first, second = operands

        def both(properties: Properties) -> bool:
            return first(properties) and second(properties)

        return both
    branches = tuple(operands)

    def all_of(properties: Properties) -> bool:
        for branch in branches:  # noqa: SIM110 - faster than any()/all()
            if not branch(properties):
                return False
        return True

    return all_of


def _negate(operand: _Match) -> _Match:
    def negated(properties: Properties) -> bool:
        return not operand(properties)

    return negated


def _eq(key: str, value: str) -> _Match:
    def eq(properties: Properties) -> bool:
        return properties.get(key) == value

    return eq


def _ne(key: str, value: str) -> _Match:
    def ne(properties: Properties) -> bool:
        return properties.get(key) != value

    return ne


def _matches(key: str, pattern: re.Pattern[str]) -> _Match:
    fullmatch = pattern.fullmatch

    def matches(properties: Properties) -> bool:
        value = properties.get(key)
        return isinstance(value, str) and fullmatch(value) is not None

    return matches


def _in(key: str, values: frozenset[str]) -> _Match:
    def in_(properties: Properties) -> bool:
        value = properties.get(key)
        return isinstance(value, str) and value in values

    return in_


def _has(key: str) -> _Match:
    def has(properties: Properties) -> bool:
        return key in properties

    return has


def _has_roles(required: frozenset[str]) -> _Match:
    if not required:
        return _always

    def has_roles(properties: Properties) -> bool:
        value = properties.get(_ROLES)
        return isinstance(value, str) and required <= _parse_roles(value)

    return has_roles


_ROLE_ITEM: Final = re.compile(r'"([^"]*)"?|([^\s,"]+)')


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse_roles(value: str) -> frozenset[str]:
    """The roles in a ``$Roles`` value such as ``"a","b"``, read leniently.

    Items are double-quoted (an unclosed quote runs to the end) or bare;
    commas and whitespace separate them; empty items are dropped.
    """
    roles = set()
    for quoted, bare in _ROLE_ITEM.findall(value):
        role = quoted or bare
        if role:
            roles.add(role)
    return frozenset(roles)
