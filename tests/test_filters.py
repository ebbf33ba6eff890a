from __future__ import annotations

import contextlib
import copy
import pickle
import random
import re
from collections.abc import Callable, Iterator, Mapping

import pytest

from aiohttp_session_ws import filters
from aiohttp_session_ws.filters import (
    MAX_CLAUSES,
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    MAX_LIST_ITEMS,
    MAX_REGEX_LENGTH,
    FilterSyntaxError,
    SessionFilter,
    parse_filter,
)

SESSIONS: dict[str, dict[str, str]] = {
    "ann": {
        "$SessionId": "s1",
        "$Principal": "ann",
        "$Roles": '"admin","user"',
        "lang": "en",
        "team": "red",
    },
    "bob": {
        "$SessionId": "s2",
        "$Principal": "bob",
        "$Roles": '"user"',
        "lang": "fr",
        "team": "blue",
    },
    "cid": {
        "$SessionId": "s3",
        "$Principal": "cid",
        "$Roles": '"admin", "ops", "user"',
        "lang": "en-GB",
    },
    "anon": {"$SessionId": "s4", "$Principal": "", "$Roles": ""},
    "dee": {
        "$SessionId": "s5",
        "$Principal": "dee",
        "$Roles": '"ops"',
        "lang": "EN",
        "team": "red",
        "note": 'it\'s "quoted"',
    },
    "eve": {
        "$SessionId": "s6",
        "$Principal": "eve",
        "lang": "de",
        "team": "green",
        "and": "x",
    },
    "fay": {
        "$SessionId": "s7",
        "$Principal": "fay",
        "$Roles": '"admin","client"',
        "lang": "en",
        "team": "blue",
        "path": "a\\b",
    },
    "gus": {
        "$SessionId": "s8",
        "$Principal": "Ann",
        "$Roles": '"user"',
        "team": "red",
    },
}
EVERYONE = frozenset(SESSIONS)


def but(*names: str) -> frozenset[str]:
    return EVERYONE - set(names)


VALID: list[tuple[str, frozenset[str]]] = [
    # all
    ("all", EVERYONE),
    ("ALL", EVERYONE),
    ("  all\n", EVERYONE),
    # eq / is, both quotes, case-insensitive keywords, case-sensitive values
    ("$Principal eq 'ann'", frozenset({"ann"})),
    ('$Principal EQ "ann"', frozenset({"ann"})),
    ("$Principal is 'ann'", frozenset({"ann"})),
    ("$Principal Is 'Ann'", frozenset({"gus"})),
    ("lang eq 'en'", frozenset({"ann", "fay"})),
    ("lang eq 'EN'", frozenset({"dee"})),
    ('$Principal eq ""', frozenset({"anon"})),
    ("$SessionId eQ 's3'", frozenset({"cid"})),
    # ne is exactly `not eq`: a missing property matches
    ("lang ne 'en'", but("ann", "fay")),
    ("not lang eq 'en'", but("ann", "fay")),
    ("$Principal NE ''", but("anon")),
    ("missing ne 'x'", EVERYONE),
    ("team ne 'red' and team ne 'blue'", frozenset({"cid", "anon", "eve"})),
    # matches: full match, a missing property never matches
    ("lang matches 'en.*'", frozenset({"ann", "cid", "fay"})),
    ("lang matches 'en'", frozenset({"ann", "fay"})),
    ("lang MATCHES '(?i)en'", frozenset({"ann", "dee", "fay"})),
    ("lang matches '.*'", but("anon", "gus")),
    ("not lang matches '.*'", frozenset({"anon", "gus"})),
    ("missing matches '.*'", frozenset()),
    ("$Principal matches 'a.*|b.*'", frozenset({"ann", "bob"})),
    (r"lang matches '\w\w'", frozenset({"ann", "bob", "dee", "eve", "fay"})),
    ("lang matches '[a-z]+(-[A-Z]+)?'", frozenset({"ann", "bob", "cid", "eve", "fay"})),
    ("lang matches '(?=e)(?>e)n'", frozenset({"ann", "fay"})),
    ("lang matches '(?!fr)..'", frozenset({"ann", "dee", "eve", "fay"})),
    # in, both list forms, commas or spaces
    ("team in ['red', 'blue']", frozenset({"ann", "bob", "dee", "fay", "gus"})),
    ("team in ['red' 'blue']", frozenset({"ann", "bob", "dee", "fay", "gus"})),
    ("team in 'red' 'blue'", frozenset({"ann", "bob", "dee", "fay", "gus"})),
    ('team in "red","blue"', frozenset({"ann", "bob", "dee", "fay", "gus"})),
    ('team IN ["green"]', frozenset({"eve"})),
    ("team in []", frozenset()),
    ("missing in ['x']", frozenset()),
    ("not team in ['red']", frozenset({"bob", "cid", "anon", "eve", "fay"})),
    ("$SessionId in 's1', 's8'", frozenset({"ann", "gus"})),
    # has
    ("has team", but("cid", "anon")),
    ("not has team", frozenset({"cid", "anon"})),
    ("HAS $Roles", but("eve")),
    ("has missing", frozenset()),
    # hasRoles: all of the listed roles
    ("hasRoles 'admin'", frozenset({"ann", "cid", "fay"})),
    ("hasRoles ['admin', 'user']", frozenset({"ann", "cid"})),
    ('hasroles "admin" "ops"', frozenset({"cid"})),
    ("HASROLES 'ops'", frozenset({"cid", "dee"})),
    ("hasRoles []", EVERYONE),
    ("hasRoles 'nobody'", frozenset()),
    ("hasRoles 'admin', 'client'", frozenset({"fay"})),
    # $Roles compared as a raw string
    ('$Roles eq \'"admin","client"\'', frozenset({"fay"})),
    ('$Roles eq \'"client","admin"\'', frozenset()),
    ("$Roles eq ''", frozenset({"anon"})),
    # precedence: not > and > or
    (
        "$Principal eq 'ann' or $Principal eq 'bob' and team eq 'red'",
        frozenset({"ann"}),
    ),
    (
        "($Principal eq 'ann' or $Principal eq 'bob') and team eq 'blue'",
        frozenset({"bob"}),
    ),
    ("not team eq 'red' and lang eq 'en'", frozenset({"fay"})),
    ("not (team eq 'red' and lang eq 'en')", but("ann")),
    (
        "team eq 'red' or team eq 'blue' or team eq 'green'",
        but("cid", "anon"),
    ),
    ("team eq 'red' and has lang and hasRoles 'user'", frozenset({"ann"})),
    ("lang eq 'en' AND team Eq 'blue'", frozenset({"fay"})),
    (
        "lang eq 'en' Or lang eq 'fr' and not team eq 'blue'",
        frozenset({"ann", "fay"}),
    ),
    ("not not all", EVERYONE),
    ("NOT all", frozenset()),
    ("((all))", EVERYONE),
    ("(lang eq 'en')or(lang eq 'fr')", frozenset({"ann", "bob", "fay"})),
    ("lang eq\"en\"or lang eq'fr'", frozenset({"ann", "bob", "fay"})),
    ("lang eq 'en'\n\tand team eq 'red'", frozenset({"ann"})),
    # escapes
    ("note eq 'it\\'s \"quoted\"'", frozenset({"dee"})),
    ('note eq "it\'s \\"quoted\\""', frozenset({"dee"})),
    (r"path eq 'a\\b'", frozenset({"fay"})),
    (r"path eq 'a\b'", frozenset({"fay"})),
    (r"path matches 'a\\\\b'", frozenset({"fay"})),
    # a keyword is a key when an operator and a value follow, or after `has`
    ("and eq 'x'", frozenset({"eve"})),
    ("has and", frozenset({"eve"})),
    ("not and ne 'x'", frozenset({"eve"})),
    ("all in ['x'] or all", EVERYONE),
]


def matching(session_filter: SessionFilter) -> frozenset[str]:
    return frozenset(
        name for name, props in SESSIONS.items() if session_filter.matches(props)
    )


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_filters_match_exactly(text: str, expected: frozenset[str]) -> None:
    assert matching(parse_filter(text)) == frozenset(expected)


def test_the_valid_table_is_big_enough() -> None:
    assert len(VALID) >= 40


INVALID: list[tuple[str, int, str]] = [
    ("", 0, "expected a clause"),
    ("   ", 3, "found the end of the filter"),
    ("lang eq 'en", 8, "unclosed string"),
    ('lang eq "en', 8, "unclosed string"),
    ("lang eq 'a\\'", 8, "unclosed string"),
    ("(lang eq 'en'", 0, "unclosed '\\('"),
    ("((lang eq 'en')", 0, "unclosed '\\('"),
    ("(lang eq 'en' team", 14, "expected 'and', 'or' or '\\)'"),
    ("lang eq 'en')", 12, "unmatched '\\)'"),
    (")", 0, "expected a clause"),
    ("lang eq 'en' team", 13, "expected 'and', 'or' or the end"),
    ("lang eq 'en' 'fr'", 13, "found a quoted string"),
    ("lang eq", 7, "expected a quoted string after 'eq'"),
    ("lang", 4, "expected an operator"),
    ("lang eq en", 8, "expected a quoted string after 'eq', found 'en'"),
    ("lang like 'x'", 5, "expected an operator .*found 'like'"),
    ("lang == 'x'", 5, "expected an operator"),
    ("and", 0, "found the keyword 'and'"),
    ("lang eq 'en' and", 16, "expected a clause"),
    ("lang eq 'en' or or team eq 'x'", 16, "found the keyword 'or'"),
    ("lang eq 'en' and (", 18, "expected a clause"),
    ("not", 3, "expected a clause"),
    ("has", 3, "expected a property key after 'has'"),
    ("has 'x'", 4, "expected a property key"),
    ("hasRoles", 8, "expected a quoted string or '\\[' after 'hasRoles'"),
    ("hasRoles admin", 9, "expected a quoted string or '\\['"),
    ("lang in", 7, "after 'in'"),
    ("lang in ['a'", 8, "unclosed '\\['"),
    ("lang in ['a',]", 13, "expected a quoted string after ','"),
    ("lang in ['a' team", 13, "expected ',', a quoted string or '\\]'"),
    ("lang in [,'a']", 9, "expected a quoted string or '\\]'"),
    ("lang in 'a',", 12, "expected a quoted string after ','"),
    ("[]", 0, "expected a clause"),
    ("$ eq 'x'", 0, "'\\$' alone"),
    ("lang matches '(a'", 13, "invalid regular expression"),
    ("lang matches '[z-a]'", 13, "invalid regular expression"),
    ("lang matches 'a{99999999999}'", 13, "invalid regular expression"),
    ("lang matches '(a+)+'", 13, "nested repeats"),
    ("lang matches '(a*)*b'", 13, "nested repeats"),
    ("lang matches '(?:a?){30}a{30}'", 13, "nested repeats"),
    ("lang matches '(?:(?:x+)y)+'", 13, "nested repeats"),
    ("lang matches '(?:a|aa)+'", 13, "alternation"),
    ("lang matches '(?:(?=a+)b)+'", 13, "nested repeats"),
    ("lang matches '(?:[a-z]-?)+'", 13, "nested repeats"),
    ("lang matches '(?<=a+)b'", 13, "invalid regular expression"),
    ("lang " + "x" * 50, 5, "found 'x{40}\\.\\.\\.'"),
    (r"lang matches '(a)\1'", 13, "backreferences"),
    ("lang matches '(?P<x>a)(?P=x)'", 13, "backreferences"),
    ("lang matches '(a)?(?(1)b|c)'", 13, "conditional"),
    ("lang matches 'x' and lang matches '" + "a" * 257 + "'", 34, "over 256"),
    ("x" * (MAX_FILTER_LENGTH + 1), MAX_FILTER_LENGTH, "over 4096 characters"),
    ("(" * 33 + "all" + ")" * 33, 32, "nest deeper than 32"),
    ("not " * 33 + "all", 4 * 32, "nest deeper than 32"),
    ("(not " * 17 + "all" + ")" * 17, 5 * 16, "nest deeper"),
    (" or ".join(["all"] * 257), 7 * 256, "more than 256 clauses"),
    ("lang in [" + ",".join(["'a'"] * 257) + "]", 9 + 4 * 256, "more than 256"),
]


@pytest.mark.parametrize(("text", "position", "says"), INVALID)
def test_invalid_filters_say_where(text: str, position: int, says: str) -> None:
    with pytest.raises(FilterSyntaxError, match=says) as caught:
        parse_filter(text)
    assert caught.value.position == position
    assert str(caught.value).endswith(f" at {position}")


def test_the_invalid_table_is_big_enough() -> None:
    assert len(INVALID) >= 25


def test_bounds_are_what_the_docs_say() -> None:
    assert (MAX_FILTER_LENGTH, MAX_DEPTH, MAX_CLAUSES) == (4096, 32, 256)
    assert (MAX_LIST_ITEMS, MAX_REGEX_LENGTH) == (256, 256)


def test_the_bounds_themselves_are_accepted() -> None:
    parse_filter("(" * MAX_DEPTH + "all" + ")" * MAX_DEPTH)
    parse_filter("not " * MAX_DEPTH + "all")
    parse_filter(" or ".join(["all"] * MAX_CLAUSES))
    parse_filter("x in [" + ",".join(["'a'"] * MAX_LIST_ITEMS) + "]")
    parse_filter("x matches '" + "a" * MAX_REGEX_LENGTH + "'")
    text = "x eq '" + "a" * (MAX_FILTER_LENGTH - 7) + "'"
    assert len(text) == MAX_FILTER_LENGTH
    parse_filter(text)


def test_huge_nesting_is_a_syntax_error_not_a_recursion_error() -> None:
    for text in [
        "(" * MAX_FILTER_LENGTH,
        "not " * (MAX_FILTER_LENGTH // 4),
        "x matches '" + "(" * 120 + ")" * 120 + "'",
        "x matches '" + "[" * 240 + "'",
    ]:
        with contextlib.suppress(FilterSyntaxError):
            parse_filter(text)


def test_deep_regex_groups_are_fine() -> None:
    session_filter = parse_filter("x matches '" + "(?:" * 60 + "a" + ")" * 60 + "'")
    assert session_filter.matches({"x": "a"})


def test_the_error_is_a_value_error_and_pickles() -> None:
    with pytest.raises(ValueError, match="at 8") as caught:
        parse_filter("lang eq 'en")
    error = caught.value
    assert isinstance(error, FilterSyntaxError)
    assert error.reason == "unclosed string: the ' quote is never closed"
    again = pickle.loads(pickle.dumps(error))
    assert (again.reason, again.position, str(again)) == (
        error.reason,
        error.position,
        str(error),
    )


@pytest.mark.parametrize("junk", [None, 1, b"all", ["all"]])
def test_non_str_is_a_type_error(junk: object) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        parse_filter(junk)  # type: ignore[arg-type]


# --- keys, immutability, cache ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "keys", "needs_user"),
    [
        ("all", set(), False),
        ("hasRoles 'a'", {"$Roles"}, False),
        ("hasRoles []", {"$Roles"}, False),
        ("$Principal eq 'a' or has $ClientIP", {"$Principal", "$ClientIP"}, False),
        ("lang in ['en'] and not team matches 'r.*'", {"lang", "team"}, True),
        ("has lang", {"lang"}, True),
        ("$Principal ne 'x' and lang eq 'en'", {"$Principal", "lang"}, True),
    ],
)
def test_keys_and_needs_user_properties(
    text: str, keys: set[str], needs_user: bool
) -> None:
    session_filter = parse_filter(text)
    assert session_filter.keys == frozenset(keys)
    assert isinstance(session_filter.keys, frozenset)
    assert session_filter.needs_user_properties is needs_user
    assert session_filter.text == text


def test_the_cache_returns_the_same_object() -> None:
    text = "lang eq 'cache-test' or hasRoles 'x'"
    assert parse_filter(text) is parse_filter(text)
    assert parse_filter(text) is not parse_filter(text + " ")


def test_a_regex_is_compiled_once_at_parse_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled: list[re.Pattern[str]] = []
    real_compile = re.compile

    def counting_compile(pattern: str, flags: int = 0) -> re.Pattern[str]:
        result = real_compile(pattern, flags)
        compiled.append(result)
        return result

    monkeypatch.setattr(re, "compile", counting_compile)
    session_filter = parse_filter("lang matches 'compiled-once-[0-9]+'")
    assert len(compiled) == 1
    pattern = compiled[0]
    for number in range(200):
        assert session_filter.matches({"lang": f"compiled-once-{number}"})
        assert not session_filter.matches({"lang": "compiled-once-"})
    assert compiled == [pattern]
    assert parse_filter("lang matches 'compiled-once-[0-9]+'") is session_filter
    assert len(compiled) == 1


def test_a_filter_is_immutable_and_shares_itself() -> None:
    session_filter = parse_filter("lang eq 'en'")
    with pytest.raises(AttributeError, match="immutable"):
        session_filter.text = "all"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        session_filter._text = "all"
    with pytest.raises(AttributeError, match="immutable"):
        del session_filter._match
    assert copy.copy(session_filter) is session_filter
    assert copy.deepcopy(session_filter) is session_filter
    assert pickle.loads(pickle.dumps(session_filter)) is session_filter
    assert session_filter == parse_filter("lang eq 'en'")
    assert session_filter != parse_filter("lang  eq 'en'")
    assert session_filter != "lang eq 'en'"
    assert hash(session_filter) == hash("lang eq 'en'")
    assert repr(session_filter) == "SessionFilter(\"lang eq 'en'\")"


@pytest.mark.parametrize(
    ("roles", "holds"),
    [
        ('"admin","user"', True),
        ('"admin", "user"', True),
        ('  "user"  "admin" ', True),
        ("admin,user", True),
        ('"user",admin', True),
        ('"admin","user', True),
        ('"admin"', False),
        ('"admin user"', False),
        ('"adminuser"', False),
        ("", False),
        ('""', False),
    ],
)
def test_roles_are_read_leniently(roles: str, holds: bool) -> None:
    session_filter = parse_filter("hasRoles 'admin' 'user'")
    assert session_filter.matches({"$Roles": roles}) is holds


def test_matches_takes_any_mapping() -> None:
    class Props(Mapping[str, str]):
        def __init__(self, data: dict[str, str]) -> None:
            self.data = data

        def __getitem__(self, key: str) -> str:
            return self.data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self.data)

        def __len__(self) -> int:
            return len(self.data)

    session_filter = parse_filter("lang in 'en' and has team and hasRoles 'a'")
    assert session_filter.matches(Props({"lang": "en", "team": "", "$Roles": '"a"'}))
    assert not session_filter.matches(Props({"lang": "en"}))


# --- fuzzing ------------------------------------------------------------------

SOUP = [
    "and", "or", "not", "all", "has", "hasRoles", "is", "eq", "ne", "matches",
    "in", "AND", "Or", "NOT", "HASROLES", "(", ")", "[", "]", ",", "'a'", '"b"',
    "''", "'(a+)+'", "'['", "'.*'", "'x{3}'", "'(?i)a|b'", "'\\\\'", "'\\'",
    "'", '"', "\\", "$", "$Roles", "$Principal", "lang", "team", "'\"admin\"'",
    "'(a)\\1'", "'a{99999999999}'", "\n", "\t", "é", "\x00", "\udc80",
]  # fmt: skip
ALPHABET = "()[],'\"\\$ \t\nabcdeinlorstAEHNOR*+?{}|.^=!-_é\x00"
VALUES = ["", "a", "b", "en", "x", '"admin"', '"admin","a"', "aaa", "[", "\\"]
KEYS = ["lang", "team", "$Roles", "$Principal", "and", "a", "x"]


ROLES = ['""', '"admin"', '"a","admin"', '"a", "b"', '"b"', ""]


def random_properties(rng: random.Random, canonical: bool = False) -> dict[str, str]:
    props = {
        key: rng.choice(VALUES) for key in rng.sample(KEYS, rng.randint(0, len(KEYS)))
    }
    if canonical and "$Roles" in props:
        props["$Roles"] = rng.choice(ROLES)
    return props


def random_text(rng: random.Random) -> str:
    """Random characters, a soup of grammar tokens, or a valid filter mutated."""
    kind = rng.random()
    if kind < 0.3:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
    if kind < 0.65:
        tokens = [rng.choice(SOUP) for _ in range(rng.randint(0, 25))]
        return "".join(token + rng.choice(["", " ", " ", "  "]) for token in tokens)
    text = random_filter(rng)[0]
    for _ in range(rng.randint(0, 2)):
        at = rng.randint(0, len(text))
        cut = rng.randint(0, 3)
        text = text[:at] + rng.choice([*SOUP, ""]) + text[at + cut :]
    return text


def test_fuzz_only_syntax_errors_escape_and_matches_never_raises() -> None:
    rng = random.Random(20240601)
    parsed = misplaced = 0
    for _ in range(5000):
        text = random_text(rng)
        try:
            session_filter = parse_filter(text)
        except FilterSyntaxError as error:
            misplaced += not 0 <= error.position <= len(text)
            continue
        parsed += 1
        for _ in range(3):
            assert isinstance(session_filter.matches(random_properties(rng)), bool)
    assert misplaced == 0
    assert parsed > 50


Eval = Callable[[Mapping[str, str]], bool]


def random_filter(rng: random.Random, depth: int = 0) -> tuple[str, Eval]:
    """A random valid filter and what it means, written independently."""
    choice = rng.randrange(8 if depth < 4 else 5)
    key = rng.choice(KEYS)
    value = rng.choice(VALUES)
    quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if choice == 0:
        return rng.choice(["all", "ALL"]), lambda p: True
    if choice == 1:
        op = rng.choice(["eq", "is", "EQ", "ne", "Ne"])
        if op.lower() == "ne":
            return f"{key} {op} {quoted}", lambda p: p.get(key) != value
        return f"{key} {op} {quoted}", lambda p: p.get(key) == value
    if choice == 2:
        items = rng.sample(VALUES, rng.randint(0, 3))
        listed = ", ".join(
            "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in items
        )
        text = (
            f"{key} in [{listed}]"
            if rng.random() < 0.5 or not items
            else (f"{key} in {listed}")
        )
        return text, lambda p: key in p and p[key] in items
    if choice == 3:
        return f"has {key}", lambda p: key in p
    if choice == 4:
        roles = rng.sample(["admin", "a", "b"], rng.randint(0, 2))
        listed = " ".join(f"'{role}'" for role in roles)

        def has_roles(p: Mapping[str, str]) -> bool:
            held = set(re.findall(r'"([^"]*)"', p.get("$Roles", "")))
            return set(roles) <= held and ("$Roles" in p or not roles)

        return f"hasRoles [{listed}]", has_roles
    if choice == 5:
        text, inner = random_filter(rng, depth + 1)
        return f"not ({text})", lambda p: not inner(p)
    left_text, left = random_filter(rng, depth + 1)
    right_text, right = random_filter(rng, depth + 1)
    if choice == 6:
        return f"({left_text}) and ({right_text})", lambda p: left(p) and right(p)
    return f"({left_text}) OR ({right_text})", lambda p: left(p) or right(p)


def test_random_valid_filters_agree_with_a_reference() -> None:
    rng = random.Random(7)
    for _ in range(1000):
        text, expected = random_filter(rng)
        session_filter = parse_filter(text)
        for _ in range(5):
            props = random_properties(rng, canonical=True)
            assert session_filter.matches(props) is expected(props), (text, props)


def test_the_module_exports_what_it_documents() -> None:
    assert set(filters.__all__) == {
        "MAX_CLAUSES",
        "MAX_DEPTH",
        "MAX_FILTER_LENGTH",
        "MAX_LIST_ITEMS",
        "MAX_REGEX_LENGTH",
        "FilterSyntaxError",
        "SessionFilter",
        "parse_filter",
    }
