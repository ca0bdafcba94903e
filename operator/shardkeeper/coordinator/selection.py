"""Resolving include/exclude (with '*' and '?' wildcards) against the collections that exist.

Only '*' (any run of characters, '' included) and '?' (one character) are wildcards; every other
character matches itself, so a collection called ``logs[2026]`` is named by exactly that selector
(``fnmatch`` would read ``[2026]`` as a character class).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from shardkeeper.api.common import listed
from shardkeeper.errors import SpecError


def _is_pattern(selector: str) -> bool:
    return any(ch in selector for ch in "*?")


def matches(name: str, selector: str) -> bool:
    """True if the collection ``name`` is named by ``selector``. Greedy matching with one saved
    position for the last '*' (no backtracking regex): at most len(name) * len(selector) steps for
    any pattern, so a selector like '**********b' cannot stall the operator. Not ``fnmatch``: it
    reads '[...]' as a character class, and here only '*' and '?' are special."""
    n = p = 0
    star, resume_at = -1, 0
    while n < len(name):
        if p < len(selector) and selector[p] == "*":
            star, resume_at = p, n
            p += 1
        elif p < len(selector) and selector[p] in ("?", name[n]):
            n, p = n + 1, p + 1
        elif star >= 0:
            resume_at += 1  # let the last '*' take one more character, and try again from there
            n, p = resume_at, star + 1
        else:
            return False
    return all(ch == "*" for ch in selector[p:])


def _check(field: str, selectors: Sequence[str], available: list[str]) -> None:
    seen: set[str] = set()
    for selector in selectors:
        if selector in seen:
            raise SpecError(f"spec.{field} contains a duplicate: {selector}")
        seen.add(selector)
        if not any(matches(name, selector) for name in available):
            what = "pattern" if _is_pattern(selector) else "collection"
            raise SpecError(
                f'spec.{field}: {what} "{selector}" matches no collection; '
                f"please choose from {listed(available)}"
            )


def resolve(
    available: Iterable[str],
    *,
    include: Sequence[str] | None,
    exclude: Sequence[str] | None,
    verb: str = "back up",
) -> list[str]:
    """The selected collections, sorted. Raises ``SpecError`` naming the field on any mistake."""
    names = sorted(set(available))
    if not names:
        raise SpecError(f"there are no collections to {verb}")
    if include and exclude:
        raise SpecError("spec.include and spec.exclude are mutually exclusive: set at most one of them")
    if include:
        _check("include", include, names)
        chosen = [n for n in names if any(matches(n, s) for s in include)]
    elif exclude:
        _check("exclude", exclude, names)
        chosen = [n for n in names if not any(matches(n, s) for s in exclude)]
    else:
        chosen = names
    if not chosen:
        raise SpecError(f"nothing left to {verb} after spec.exclude; please choose from {listed(names)}")
    return chosen
