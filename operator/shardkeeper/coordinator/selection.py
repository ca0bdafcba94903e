"""Resolving include/exclude (with '*' and '?' wildcards) against the collections that exist."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from shardkeeper.errors import SpecError


def _is_pattern(selector: str) -> bool:
    return any(ch in selector for ch in "*?")


def _check(field: str, selectors: Sequence[str], available: list[str]) -> None:
    seen: set[str] = set()
    for selector in selectors:
        if selector in seen:
            raise SpecError(f"spec.{field} contains a duplicate: {selector}")
        seen.add(selector)
        if not any(fnmatch.fnmatchcase(name, selector) for name in available):
            what = "pattern" if _is_pattern(selector) else "collection"
            raise SpecError(
                f'spec.{field}: {what} "{selector}" matches no collection; please choose from {available}'
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
        chosen = [n for n in names if any(fnmatch.fnmatchcase(n, s) for s in include)]
    elif exclude:
        _check("exclude", exclude, names)
        chosen = [n for n in names if not any(fnmatch.fnmatchcase(n, s) for s in exclude)]
    else:
        chosen = names
    if not chosen:
        raise SpecError(f"nothing left to {verb} after spec.exclude; please choose from {names}")
    return chosen
