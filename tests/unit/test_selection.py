from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardkeeper.coordinator.selection import matches, resolve
from shardkeeper.errors import SpecError

AVAILABLE = ["articles", "authors", "users", "vectors_a", "vectors_b"]


def test_no_selector_means_everything() -> None:
    assert resolve(AVAILABLE, include=None, exclude=None) == AVAILABLE


def test_include_with_wildcards() -> None:
    assert resolve(AVAILABLE, include=["vectors_*", "a?thors"], exclude=None) == [
        "authors",
        "vectors_a",
        "vectors_b",
    ]


def test_exclude_with_wildcards() -> None:
    assert resolve(AVAILABLE, include=None, exclude=["a*"]) == ["users", "vectors_a", "vectors_b"]


@pytest.mark.parametrize(
    ("include", "exclude", "message"),
    [
        (["users", "users"], None, "spec.include contains a duplicate: users"),
        (["nope"], None, 'spec.include: collection "nope" matches no collection'),
        (["zz*"], None, 'spec.include: pattern "zz*" matches no collection'),
        (None, ["ghost"], 'spec.exclude: collection "ghost" matches no collection'),
        (None, ["*"], "nothing left to back up"),
        (["users"], ["users"], "mutually exclusive"),
    ],
)
def test_mistakes_name_the_field_and_list_what_exists(
    include: list[str] | None, exclude: list[str] | None, message: str
) -> None:
    with pytest.raises(SpecError) as err:
        resolve(AVAILABLE, include=include, exclude=exclude)
    assert message in str(err.value)
    if "matches no" in message or "nothing left" in message:
        assert str(AVAILABLE) in str(err.value)


def test_empty_cluster_is_an_error() -> None:
    with pytest.raises(SpecError, match="no collections to back up"):
        resolve([], include=None, exclude=None)


def test_only_star_and_question_mark_are_wildcards() -> None:
    names = ["logs[2026]", "logs2", "my coll", "données", "-dash", "a.b"]
    assert resolve(names, include=["logs[2026]"], exclude=None) == ["logs[2026]"]
    assert resolve(names, include=["my coll", "donn?es", "-*"], exclude=None) == [
        "-dash",
        "données",
        "my coll",
    ]
    assert resolve(names, include=["a.b"], exclude=None) == ["a.b"]
    with pytest.raises(SpecError, match=r'collection "a\.c" matches no collection'):
        resolve(names, include=["a.c"], exclude=None)


@given(st.text(min_size=1, max_size=30).filter(lambda s: "*" not in s and "?" not in s))
def test_a_name_without_wildcards_selects_exactly_itself(name: str) -> None:
    assert resolve([name, name + "x", "x" + name], include=[name], exclude=None) == [name]


@pytest.mark.parametrize(("include", "exclude"), [(["ghost"], None), (None, ["*"])])
def test_a_mistake_among_many_collections_names_the_first_few_and_counts_the_rest(
    include: list[str] | None, exclude: list[str] | None
) -> None:
    many = [f"c{i:05d}" for i in range(20_000)]
    with pytest.raises(SpecError) as err:
        resolve(many, include=include, exclude=exclude)
    assert str(err.value).endswith("'c00009', ... and 19990 more]") and len(str(err.value)) < 300


def _reference(name: str, selector: str) -> bool:
    """The rule as a regex (backtracking: fine for the small cases hypothesis draws)."""
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in selector)
    return re.fullmatch("".join(parts), name, re.DOTALL) is not None


@given(st.text(alphabet="ab*?.[", max_size=8), st.text(alphabet="ab.[*?", max_size=10))
def test_matching_is_the_wildcard_rule(selector: str, name: str) -> None:
    assert matches(name, selector) == _reference(name, selector)


def test_a_pattern_of_many_stars_is_matched_without_backtracking() -> None:
    # A backtracking regex took 33 s on this (found by a fresh tester); the matcher is O(n * m).
    assert not matches("a" * 40, "**********b")
    assert matches("a" * 40 + "b", "*a*a*a*a*a*b")
