"""Hints for queries that are valid but probably not what was meant.

- A filter on a catalog text field (``category``, ``brand``, ``item`` or another text
  column of the items) naming a value that no item has is legal and matches nothing; a
  typo (``"Outdor"``) would silently give 0. Such values become ``QueryWarning``s that
  travel with the (exact) count: ``unknown category "Outdor" (did you mean "Outdoor"?)``.
- Attribute names are case-sensitive; ``name_hint`` turns ``GENDER`` into a message that
  says so and suggests ``gender``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from segd.columns import CategoryColumn
from segd.results import QueryWarning
from segd.store import Store

VALUE_OPS = ("=", "!=", "in", "not_in")
# Beyond this many distinct values the closest-value search is skipped (difflib is linear
# in the values and a warning must not cost more than the query).
MAX_SUGGEST_VALUES = 20_000


def unknown_values(store: Store, filters: list[dict], path: str) -> list[QueryWarning]:
    """Warnings for the values of an event's `where` filters that no item has."""
    out: list[QueryWarning] = []
    catalog = store.catalog
    for i, f in enumerate(filters):
        field, op = f.get("field"), f.get("op")
        if op not in VALUE_OPS or not isinstance(field, str):
            continue
        if field == "item":
            dictionary, tree = catalog.ids, False
        else:
            col = catalog.columns.get(field)
            if not isinstance(col, CategoryColumn):
                continue
            dictionary, tree = col.dictionary, field == "category"
        value = f.get("value")
        values = value if isinstance(value, list) else [value]
        where = f"{path}[{i}].value"
        known: frozenset[str] | None = None
        for k, v in enumerate(values):
            if not isinstance(v, str) or dictionary.lookup_one(v) >= 0:
                continue
            if tree:
                if known is None:
                    known = category_tree(dictionary)
                if v in known:
                    continue
                candidates: Iterable[str] = known
            elif len(dictionary) <= MAX_SUGGEST_VALUES:
                candidates = dictionary.to_arrow().to_pylist()
            else:
                candidates = ()
            at = f"{where}[{k}]" if isinstance(value, list) else where
            out.append(QueryWarning(at, field, v, _closest(v, candidates)))
    return out


# The category tree of the last dictionaries asked: (dictionary, its size, nodes) by id.
# A filter naming an inner node ("Outdoor") is not in the dictionary of leaf paths, so
# every query with one looked at the whole tree again (~0.5 ms at 5k categories).
_trees: dict[int, tuple[object, int, frozenset[str]]] = {}
MAX_CACHED_TREES = 8


def category_tree(dictionary) -> frozenset[str]:
    """Every node of the category tree of `dictionary` (paths), memoised while the
    dictionary keeps its size (dictionaries only grow)."""
    size = len(dictionary)
    hit = _trees.get(id(dictionary))
    if hit is not None and hit[0] is dictionary and hit[1] == size:
        return hit[2]
    nodes = frozenset(_category_nodes(dictionary.to_arrow().to_pylist()))
    if len(_trees) >= MAX_CACHED_TREES:
        _trees.clear()
    _trees[id(dictionary)] = (dictionary, size, nodes)
    return nodes


def _category_nodes(paths: list[str]) -> set[str]:
    """Every node of the category tree: ``A/B/C`` gives ``A``, ``A/B`` and ``A/B/C``."""
    nodes: set[str] = set()
    for p in paths:
        parts = p.split("/")
        for depth in range(1, len(parts) + 1):
            nodes.add("/".join(parts[:depth]))
    return nodes


def _closest(value: str, candidates: Iterable[str]) -> str:
    pool = list(candidates)
    folded = [c for c in pool if c.casefold() == value.casefold()]
    if folded:
        return folded[0]
    close = difflib.get_close_matches(value, pool, n=1, cutoff=0.6)
    if not close:  # "Tents" for "Sports/Outdoor/Tents": compare the last path part too
        leaves = {c.rsplit("/", 1)[-1]: c for c in pool if "/" in c}
        close = [leaves[m] for m in difflib.get_close_matches(value, leaves, n=1)]
    return close[0] if close else ""


def name_hint(name: str, known: Iterable[str]) -> str:
    """' (...)' suggesting a known name for an unknown one, or ''.

    A name that differs only in case says that names are case-sensitive."""
    names = [k for k in known if k != name]
    same = [k for k in names if k.casefold() == name.casefold()]
    if same:
        return f" (names are case-sensitive: did you mean {same[0]!r}?)"
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
