"""Recommendation lookup: related, alternatives, popular (with filters), personal, search.

A ``RecsModel`` is derived data, built from the event logs by the kernels of
``segd.native.recs`` (see docs/recommendations.md for the measures and why):

- two item-item neighbour lists (``k`` per item, shrunk cosine over contacts' baskets):
  ``related`` weighs orders 1, carts 0.5, views 0.25 (complements: co-purchase first);
  ``alternatives`` weighs views 1, carts 0.5 and ignores orders (substitutes: co-view);
- popularity (distinct contacts per item in the window) for orders, carts and views, and
  per category node (every prefix of a ``/`` path, the root included) the items in
  popularity order, ties by item id;
- each contact's basket of the window (for ``personal``) and everything it ever ordered
  (for excluding bought items);
- search phrase -> the categories of the items the searchers touched within an hour.

``Recommender`` builds a model aside (the event logs are read under the engine's read
lock, the heavy co-occurrence runs outside it) and swaps it in with one assignment, so
lookups never wait for a rebuild. Lookups read the model plus the live catalog (stock,
filters, repeatable flags). Contacts who ordered since the model was built (or were
merged) are "dirty": their bought items are read from the live order log.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from segd.errors import ContactNotFound, InvalidInput, NotFound
from segd.native import NO_CODE
from segd.native import recs as kernels
from segd.native.contactindex import group_by_contact as contact_index

KINDS = ("related", "alternatives", "popular", "personal", "search")
POPULAR_EVENTS = ("order", "add_to_cart", "view")  # bit 1, 2, 4 in baskets
MAX_DEPTH = kernels.MAX_DEPTH
MAX_LIMIT = 1000
MAX_SEED_ITEMS = 100
NO_NODE = int(NO_CODE)
_EVENT_INDEX = {e: i for i, e in enumerate(POPULAR_EVENTS)}
_NO_ITEMS = np.zeros(0, dtype=np.uint32)
_NO_WEIGHTS = np.zeros(0, dtype=np.float32)
_ROOT = np.zeros(1, dtype=np.uint32)
_NO_FLAGS = np.zeros(0, dtype=np.uint8)
for _a in (_NO_ITEMS, _NO_WEIGHTS, _ROOT, _NO_FLAGS):
    _a.flags.writeable = False


class ItemNotFound(NotFound):
    """An item id the catalog does not know (``item_id`` says which)."""

    def __init__(self, item_id: str) -> None:
        super().__init__(f"item {item_id!r} not found in the catalog")
        self.item_id = item_id


class CategoryNotFound(NotFound):
    """A category path that no item of the catalog is under."""

    def __init__(self, category: str) -> None:
        super().__init__(f"category {category!r} not found in the catalog")
        self.category = category


@dataclass(frozen=True)
class RecsConfig:
    """How a model is built (docs/recommendations.md)."""

    window_days: int = 90  # events in [as_of - window, as_of] feed the model
    neighbours: int = 40  # k: neighbours kept per item
    shrink: float = 2.0  # cosine shrinkage (in weighted co-occurrences)
    basket_cap: int = 50  # distinct items per contact that feed co-occurrence
    search_span_s: int = 3600  # a search leads to the items touched this soon after
    related_weights: tuple[float, float, float] = (1.0, 0.5, 0.25)  # order, cart, view
    alternative_weights: tuple[float, float, float] = (0.0, 0.5, 1.0)
    personal_seeds: int = 30  # newest basket items a personal lookup starts from
    # personal: the pull of an item the contact itself viewed / carted (times its weight)
    self_weight: float = 3.0
    # personal: popularity (share of the bestseller's buyers) added to each candidate
    pop_weight: float = 1.0

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> RecsConfig:
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        for key in values:
            if key not in known:
                raise InvalidInput.at(
                    f"config.{key}", f"unknown setting (one of {sorted(known)})"
                )
        settings: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
        }
        cfg = cls(**settings)
        if cfg.window_days <= 0 or cfg.neighbours <= 0 or cfg.basket_cap <= 0:
            raise InvalidInput.at(
                "config", "window_days, neighbours and basket_cap must be > 0"
            )
        if cfg.shrink < 0 or cfg.search_span_s <= 0 or cfg.personal_seeds <= 0:
            raise InvalidInput.at(
                "config", "shrink >= 0, search_span_s > 0, personal_seeds > 0"
            )
        return cfg


def _bit_weights(weights: Sequence[float]) -> np.ndarray:
    """float32[8]: the weight of a basket entry = the largest weight of its bits."""
    out = np.zeros(8, dtype=np.float32)
    for bits in range(8):
        out[bits] = max((weights[b] for b in range(3) if bits >> b & 1), default=0.0)
    return out


@dataclass
class Neighbours:
    offsets: np.ndarray  # uint32[n_items + 1]
    items: np.ndarray  # uint32
    scores: np.ndarray  # float32


@dataclass
class RecsModel:
    """One immutable model (see module docstring); every array is read-only once built."""

    config: RecsConfig
    as_of_s: int
    n_items: int
    n_contacts: int
    id_rank: np.ndarray  # uint32[n_items]: rank of the item id string (ties)
    node_paths: list[str]
    item_nodes: np.ndarray  # uint32[n_items, MAX_DEPTH]: node per depth, NO_CODE past
    pop: (
        np.ndarray
    )  # uint32[3, n_items]: distinct contacts per event (order, cart, view)
    rank_off: np.ndarray  # int64[3, n_nodes + 1]: per event, CSR of node -> items
    rank_items: np.ndarray  # uint32[3, total]
    rank_scores: np.ndarray  # float32[3, total]: the popularity counts
    related: Neighbours
    alternatives: Neighbours
    basket_off: np.ndarray  # int64[n_contacts + 1]
    basket_items: np.ndarray  # uint32
    basket_bits: np.ndarray  # uint8
    bought_off: np.ndarray  # int64[n_contacts + 1]
    bought_items: np.ndarray  # uint32, sorted per contact
    phrases: dict[str, tuple[np.ndarray, np.ndarray]]  # phrase -> (nodes, weights)
    build_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    node_index: dict[str, int] = field(default_factory=dict)

    pop_max: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        """Lookup helpers derived from the arrays (not persisted: cheap to derive)."""
        self.node_index = {p: i for i, p in enumerate(self.node_paths)}
        self.node_depth = [p.count("/") + 1 if p else 0 for p in self.node_paths]
        self.pop_max = tuple(float(self.pop[e].max(initial=0)) for e in range(3))
        self.pop_bonus = [
            (self.config.pop_weight * self.pop[e] / max(self.pop_max[e], 1.0)).astype(
                np.float32
            )
            for e in range(3)
        ]
        depth = np.count_nonzero(self.item_nodes != NO_CODE, axis=1) - 1
        self.item_leaf = self.item_nodes[
            np.arange(self.n_items), np.maximum(depth, 0)
        ].astype(np.uint32)
        # personal seeds: event weight x recency (position in the contact's basket)
        pos = np.arange(len(self.basket_items)) - np.repeat(
            self.basket_off[:-1], np.diff(self.basket_off)
        )
        self.basket_weights = (
            _bit_weights(self.config.related_weights)[self.basket_bits]
            / (1.0 + 0.1 * pos)
        ).astype(np.float32)
        self._names: tuple[list[str], np.ndarray, np.ndarray] | None = None
        self._codes: dict[str, int] | None = None

    def item_codes(self, catalog) -> dict[str, int]:
        """item id -> code of the model's items (codes never change; items added since
        the build are looked up in the catalog): a dict lookup per cart item."""
        codes = self._codes
        if codes is None:
            names = self.item_names(catalog)[0]
            codes = self._codes = dict(zip(names, range(len(names)), strict=True))
        return codes

    def item_names(self, catalog) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The model's item ids by code as (str list, UTF-8 offsets int64[n + 1], UTF-8
        bytes): every item a lookup returns is a model item, and item ids never change,
        so they are decoded once per model (a lookup then indexes a list)."""
        names = self._names
        if names is None:
            arr = catalog.ids.decode(np.arange(self.n_items, dtype=np.uint32))
            offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[
                arr.offset : arr.offset + self.n_items + 1
            ]
            data = arr.buffers()[2]
            raw = _NO_FLAGS if data is None else np.frombuffer(data, dtype=np.uint8)
            names = self._names = (arr.to_pylist(), offsets, raw)
        return names

    def nbytes(self) -> int:
        arrays = [
            self.id_rank, self.item_nodes, self.pop, self.rank_off, self.rank_items,
            self.rank_scores, self.basket_off, self.basket_items, self.basket_bits,
            self.bought_off, self.bought_items,
            *(getattr(n, a) for n in (self.related, self.alternatives)
              for a in ("offsets", "items", "scores")),
        ]  # fmt: skip
        return int(sum(a.nbytes for a in arrays))

    # -- snapshots (segd.snapshot) -------------------------------------------------------
    _ARRAYS = (
        "id_rank", "item_nodes", "pop", "rank_off", "rank_items", "rank_scores",
        "basket_off", "basket_items", "basket_bits", "bought_off", "bought_items",
    )  # fmt: skip

    def to_snapshot(self, w, prefix: str) -> dict:
        """The arrays (flattened) through the snapshot writer; the metadata back."""
        shapes = {}
        for name in self._ARRAYS:
            arr = getattr(self, name)
            w.array(f"{prefix}.{name}", arr.reshape(-1))
            shapes[name] = [list(arr.shape), np.lib.format.dtype_to_descr(arr.dtype)]
        for which in ("related", "alternatives"):
            nb = getattr(self, which)
            for part in ("offsets", "items", "scores"):
                arr = getattr(nb, part)
                w.array(f"{prefix}.{which}.{part}", arr)
                shapes[f"{which}.{part}"] = [
                    list(arr.shape),
                    np.lib.format.dtype_to_descr(arr.dtype),
                ]
        phrases = list(self.phrases)
        lengths = [len(self.phrases[p][0]) for p in phrases]
        w.array(
            f"{prefix}.phrase_nodes",
            np.concatenate([self.phrases[p][0] for p in phrases] or [_NO_ITEMS]),
        )
        w.array(
            f"{prefix}.phrase_weights",
            np.concatenate([self.phrases[p][1] for p in phrases] or [_NO_WEIGHTS]),
        )
        return {
            "config": asdict(self.config),
            "as_of_s": self.as_of_s,
            "n_items": self.n_items,
            "n_contacts": self.n_contacts,
            "node_paths": self.node_paths,
            "shapes": shapes,
            "phrases": phrases,
            "phrase_lengths": lengths,
            "build_seconds": self.build_seconds,
        }

    @classmethod
    def from_snapshot(cls, r, prefix: str, meta: dict) -> RecsModel:
        """The model over the snapshot's (memory-mapped, read-only) arrays."""

        def load(name: str) -> np.ndarray:
            shape, descr = meta["shapes"][name]
            n = int(np.prod(shape)) if shape else 1
            arr = r.array(f"{prefix}.{name}", np.dtype(descr), n).reshape(shape)
            arr.flags.writeable = False
            return arr

        arrays: dict[str, Any] = {name: load(name) for name in cls._ARRAYS}
        nbrs = {
            which: Neighbours(
                *(load(f"{which}.{part}") for part in ("offsets", "items", "scores"))
            )
            for which in ("related", "alternatives")
        }
        total = int(sum(meta["phrase_lengths"]))
        nodes = r.array(f"{prefix}.phrase_nodes", np.uint32, total)
        weights = r.array(f"{prefix}.phrase_weights", np.float32, total)
        phrases = {}
        pos = 0
        for phrase, k in zip(meta["phrases"], meta["phrase_lengths"], strict=True):
            phrases[phrase] = (nodes[pos : pos + k], weights[pos : pos + k])
            pos += k
        config: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()
        }
        return cls(
            config=RecsConfig(**config),
            as_of_s=meta["as_of_s"],
            n_items=meta["n_items"],
            n_contacts=meta["n_contacts"],
            node_paths=list(meta["node_paths"]),
            related=nbrs["related"],
            alternatives=nbrs["alternatives"],
            phrases=phrases,
            build_seconds=meta.get("build_seconds", 0.0),
            **arrays,
        )

    def stats(self) -> dict[str, Any]:
        return {
            "as_of_s": self.as_of_s,
            "items": self.n_items,
            "contacts": self.n_contacts,
            "categories": len(self.node_paths),
            "phrases": len(self.phrases),
            "related_pairs": int(len(self.related.items)),
            "alternative_pairs": int(len(self.alternatives.items)),
            "basket_entries": int(len(self.basket_items)),
            "bought_entries": int(len(self.bought_items)),
            "bytes": self.nbytes(),
            "build_seconds": round(self.build_seconds, 4),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "config": asdict(self.config),
        }


def _cell(catalog, name: str, code: int) -> Any:
    col = catalog.columns.get(name)
    if col is None or code >= len(catalog):
        return None
    if hasattr(col, "dictionary"):  # category-like text
        value = int(col.codes[code])
        return None if value == NO_CODE else col.dictionary.decode_one(value)
    valid = getattr(col, "valid", None)
    if valid is None or not valid[code]:
        return None
    return float(col.values[code]) if col.kind == "float" else col.values[code].item()


@dataclass(frozen=True)
class _Plan:
    """A lookup's arguments, checked and resolved (see Recommender._plan)."""

    model: RecsModel
    kind: str
    nbrs: Neighbours
    seeds: np.ndarray
    weights: np.ndarray
    e: int
    nodes: np.ndarray  # explicit popularity lists (before the seeds' categories)
    nodes_root: np.ndarray  # ... ending with the bestsellers, for lookups without seeds
    allowed: np.ndarray
    within: int
    within_depth: int
    limit: int
    scale: float
    exclude_bought: bool


def normalize_phrase(phrase: str) -> str:
    return " ".join(phrase.lower().split())


# -- build ---------------------------------------------------------------------------


def _catalog_nodes(catalog, n_items: int) -> tuple[list[str], np.ndarray]:
    """Category nodes (root "" first, then every path prefix) and item -> node per depth."""
    item_nodes = np.full((n_items, MAX_DEPTH), NO_CODE, dtype=np.uint32)
    item_nodes[:, 0] = 0
    paths = [""]
    col = catalog.columns.get("category")
    if col is None or n_items == 0:
        return paths, item_nodes
    codes = col.codes[:n_items]
    values = col.dictionary.to_arrow().to_pylist()
    index: dict[str, int] = {"": 0}
    per_code = np.full((len(values), MAX_DEPTH), NO_CODE, dtype=np.uint32)
    for c, value in enumerate(values):  # one per distinct category value, not per item
        parts = [p for p in value.split("/") if p][: MAX_DEPTH - 1]
        per_code[c, 0] = 0
        for d in range(1, len(parts) + 1):
            prefix = "/".join(parts[:d])
            node = index.get(prefix)
            if node is None:
                node = index[prefix] = len(paths)
                paths.append(prefix)
            per_code[c, d] = node
    has = codes != NO_CODE
    item_nodes[has] = per_code[codes[has]]
    return paths, item_nodes


def _rank_lists(
    item_nodes: np.ndarray, pop: np.ndarray, id_rank: np.ndarray, n_nodes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event type, node -> its items by popularity (ties by id rank), as CSR."""
    item_idx, depth = np.nonzero(item_nodes != NO_CODE)
    node = item_nodes[item_idx, depth]
    offs, items, scores = [], [], []
    for e in range(3):
        order = np.lexsort(
            (id_rank[item_idx], -pop[e][item_idx].astype(np.int64), node)
        )
        counts = np.bincount(node, minlength=n_nodes)
        off = np.zeros(n_nodes + 1, dtype=np.int64)
        np.cumsum(counts, out=off[1:])
        offs.append(off)
        ranked = item_idx[order].astype(np.uint32)
        items.append(ranked)
        scores.append(pop[e][ranked].astype(np.float32))
    return np.stack(offs), np.stack(items), np.stack(scores)


def _as_of(store) -> int:
    """The newest event time: the window ends there (a replayed old dataset still has a
    model; live, it is about now)."""
    last = [int(log.ts[log.n - 1]) for log in store.logs.values() if log.n]
    return max(last, default=int(time.time()))


def build_model(
    store,
    config: RecsConfig,
    read_lock: Callable[[], Any],
    on_extracted: Callable[[], None] | None = None,
) -> RecsModel:
    """A model of `store`. The logs are read inside ``read_lock()`` (a context manager);
    `on_extracted` is called inside it once the event data has been read."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: list[float] = [t0]) -> None:  # noqa: B006
        now = time.perf_counter()
        timings[name] = now - since[0]
        since[0] = now

    with read_lock():
        as_of = _as_of(store)
        lo_s = max(as_of - config.window_days * 86_400, 0)
        n_items = len(store.catalog)
        n_contacts = store.n_contacts
        ids = store.catalog.ids.to_arrow().to_numpy(zero_copy_only=False)
        node_paths, item_nodes = _catalog_nodes(store.catalog, n_items)
        lap("catalog")
        counts = np.zeros(n_contacts + 1, dtype=np.int64)
        windows = []
        for bit, etype in ((1, "order"), (2, "add_to_cart"), (4, "view")):
            log = store.logs.get(etype)
            item = None if log is None else log.dim("item")
            if item is None or log.n == 0:
                continue
            r0, r1 = log.window(lo_s, as_of + 1)
            kernels.basket_count(log.cid, item, r0, r1, counts)
            windows.append((bit, log, item, r0, r1))
        offsets = np.cumsum(counts)
        cursor = np.zeros(n_contacts, dtype=np.int64)
        b_items = np.empty(int(offsets[-1]), dtype=np.uint32)
        b_bits = np.empty(int(offsets[-1]), dtype=np.uint8)
        for bit, log, item, r0, r1 in windows:
            kernels.basket_fill(
                log.cid, item, r0, r1, bit, offsets, cursor, b_items, b_bits
            )
        del cursor, counts
        lap("baskets")
        orders = store.logs.get("order")
        if orders is not None and orders.dim("item") is not None and orders.n:
            bought_off, bought_items = kernels.contact_sets(
                orders.cid, orders.dim("item"), 0, orders.n, n_contacts
            )
        else:
            bought_off = np.zeros(n_contacts + 1, dtype=np.int64)
            bought_items = np.zeros(0, dtype=np.uint32)
        lap("bought")
        phrase_codes, phrase_items = _phrase_pairs(store, lo_s, as_of, config)
        phrase_map = store.dim_maps.get("phrase")
        used = np.unique(phrase_codes)
        phrase_text = (
            phrase_map.decode(used).to_pylist() if phrase_map is not None else []
        )
        lap("phrases")
        if on_extracted is not None:
            on_extracted()
    id_rank = np.empty(n_items, dtype=np.uint32)
    id_rank[np.argsort(ids, kind="stable")] = np.arange(n_items, dtype=np.uint32)
    pop = kernels.basket_dedup(offsets, b_items, b_bits, n_items, config.basket_cap)
    b_items = b_items[: offsets[-1]].copy()
    b_bits = b_bits[: offsets[-1]].copy()
    lap("dedup")
    related, alternatives = _neighbours_pair(offsets, b_items, b_bits, id_rank, config)
    lap("neighbours")
    rank_off, rank_items, rank_scores = _rank_lists(
        item_nodes, pop, id_rank, len(node_paths)
    )
    phrases = _phrase_model(phrase_codes, phrase_items, used, phrase_text, item_nodes)
    lap("rank_lists")
    model = RecsModel(
        config=config,
        as_of_s=as_of,
        n_items=n_items,
        n_contacts=n_contacts,
        id_rank=id_rank,
        node_paths=node_paths,
        item_nodes=item_nodes,
        pop=pop,
        rank_off=rank_off,
        rank_items=rank_items,
        rank_scores=rank_scores,
        related=related,
        alternatives=alternatives,
        basket_off=offsets,
        basket_items=b_items,
        basket_bits=b_bits,
        bought_off=bought_off,
        bought_items=bought_items,
        phrases=phrases,
        build_seconds=time.perf_counter() - t0,
        timings=timings,
    )
    for arr in (id_rank, item_nodes, pop, rank_off, rank_items, rank_scores, offsets,
                b_items, b_bits, bought_off, bought_items):  # fmt: skip
        arr.flags.writeable = False
    return model


NEIGHBOUR_THREADS = 2  # threads splitting the items of the co-occurrence


def _neighbours_pair(
    offsets, items, bits, id_rank, config
) -> tuple[Neighbours, Neighbours]:
    """(related, alternatives): both neighbour models in one pass over the baskets
    (``kernels.cooccur_pair``), the items split between threads (the kernel runs
    without the GIL and threads claim chunks of items from a shared counter)."""
    n_items, k = len(id_rank), config.neighbours
    w_rel = _bit_weights(config.related_weights)
    w_alt = _bit_weights(config.alternative_weights)
    packed = kernels.pack_baskets(items, bits)
    item_off, contacts, item_bits, n_rel, n_alt = kernels.transpose_pair(
        offsets, packed, w_rel, w_alt, n_items
    )
    counts = np.zeros((2, n_items), dtype=np.uint32)
    slot_items = np.empty((2, n_items * k), dtype=np.uint32)
    slot_scores = np.empty((2, n_items * k), dtype=np.float32)
    next_chunk = np.zeros(1, dtype=np.int64)
    args = (
        offsets, packed, w_rel, w_alt, item_off, contacts, item_bits, n_rel, n_alt,
        id_rank, k, config.shrink, next_chunk, counts, slot_items, slot_scores,
    )  # fmt: skip
    with ThreadPoolExecutor(NEIGHBOUR_THREADS, thread_name_prefix="segd-recs") as pool:
        for job in [
            pool.submit(kernels.cooccur_pair, *args) for _ in range(NEIGHBOUR_THREADS)
        ]:
            job.result()
    del packed, item_off, contacts, item_bits
    out = []
    for w in range(2):
        keep = (np.arange(k, dtype=np.uint32) < counts[w][:, None]).reshape(-1)
        off = np.zeros(n_items + 1, dtype=np.uint32)
        np.cumsum(counts[w], out=off[1:])
        nbr = slot_items[w][keep]
        scores = slot_scores[w][keep]
        for arr in (off, nbr, scores):
            arr.flags.writeable = False
        out.append(Neighbours(off, nbr, scores))
    return out[0], out[1]


def _phrase_pairs(store, lo_s: int, as_of: int, config: RecsConfig):
    """(phrase codes, item codes) of searches followed by item events of the searcher."""
    empty = np.zeros(0, dtype=np.uint32)
    search = store.logs.get("search")
    if search is None or search.dim("phrase") is None or search.n == 0:
        return empty, empty
    s0, s1 = search.window(lo_s, as_of + 1)
    if s0 == s1:
        return empty, empty
    n = store.n_contacts
    s_off, s_rows = contact_index(np.ascontiguousarray(search.cid[s0:s1]), n)
    s_ts = search.ts[s0:s1]
    s_phrase = search.dim("phrase")[s0:s1]
    phr, itm = [empty], [empty]
    for etype in ("view", "add_to_cart", "order"):
        log = store.logs.get(etype)
        if log is None or log.dim("item") is None or log.n == 0:
            continue
        r0, r1 = log.window(lo_s, as_of + 1)
        if r0 == r1:
            continue
        e_off, e_rows = contact_index(np.ascontiguousarray(log.cid[r0:r1]), n)
        p, i = kernels.phrase_pairs(
            s_off, s_rows, s_ts, s_phrase, e_off, e_rows, log.ts[r0:r1],
            log.dim("item")[r0:r1], config.search_span_s, (s1 - s0) * 20,
        )  # fmt: skip
        phr.append(p)
        itm.append(i)
    return np.concatenate(phr), np.concatenate(itm)


def _phrase_model(codes, items, used, texts, item_nodes) -> dict:
    """phrase -> (leaf nodes by share, shares): where a phrase led searchers."""
    if len(codes) == 0:
        return {}
    depth = np.count_nonzero(item_nodes != NO_CODE, axis=1) - 1
    leaf = item_nodes[np.arange(len(item_nodes)), np.maximum(depth, 0)]
    keep = items < len(leaf)
    codes, nodes = codes[keep], leaf[items[keep]].astype(np.int64)
    phrase_idx = np.searchsorted(used, codes)
    key = phrase_idx.astype(np.int64) * (int(nodes.max(initial=0)) + 1) + nodes
    uniq, counts = np.unique(key, return_counts=True)
    span = int(nodes.max(initial=0)) + 1
    p_of, n_of = uniq // span, uniq % span
    grouped: dict[str, dict[int, float]] = {}
    for p, nd, c in zip(p_of.tolist(), n_of.tolist(), counts.tolist(), strict=True):
        per_node = grouped.setdefault(normalize_phrase(texts[p]), {})
        per_node[nd] = per_node.get(nd, 0.0) + c
    out = {}
    for phrase, per_node in grouped.items():
        ranked = sorted(per_node.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        total = sum(per_node.values())
        out[phrase] = (
            np.asarray([nd for nd, _ in ranked], dtype=np.uint32),
            np.asarray([c / total for _, c in ranked], dtype=np.float32),
        )
    return out


# -- lookup --------------------------------------------------------------------------


def parse_filters(filters: Any) -> list[dict]:
    """Filters in the segment language's event-filter form: text such as
    ``colour = "red", size = "S", price < 5000`` or a list of ``{field, op, value}``."""
    from segd.segments import ast, dsl

    if filters is None or filters == "" or filters == []:
        return []
    if isinstance(filters, str):
        return dsl.parse(f"view({filters})").get("where", [])
    return ast._where(list(filters), "filters")


PARALLEL_BATCH = 512  # contacts from which a batch is split over two threads
_BATCH_POOL: ThreadPoolExecutor | None = None
_BATCH_POOL_LOCK = threading.Lock()


def _batch_pool() -> ThreadPoolExecutor:
    """Two threads for the halves of large batches, shared by every engine."""
    global _BATCH_POOL
    with _BATCH_POOL_LOCK:
        if _BATCH_POOL is None:
            _BATCH_POOL = ThreadPoolExecutor(2, thread_name_prefix="segd-recs-batch")
        return _BATCH_POOL


class Recommender:
    """The engine's recommendation state: the current model, dirty contacts, masks."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.model: RecsModel | None = None
        self.config = RecsConfig()
        self._state = threading.Lock()
        self._building = threading.Lock()  # one rebuild at a time
        self._dirty: set[int] = set()  # contacts that ordered since the model's read
        self._pending: set[int] | None = None  # ... since the read of a build underway
        self._masks: dict[tuple, np.ndarray] = {}
        # resolved lookups of (model, catalog version, catalog size): argument key ->
        # kernels.Lookup (see _prepared)
        self._lookups: tuple[Any, int, int, dict] = (None, -1, -1, {})
        engine._touch_hooks.append(self._touched)

    # -- model lifecycle --------------------------------------------------------------
    def _touched(self, cids: np.ndarray, cause: str) -> None:
        if cause not in ("order", "merge"):
            return
        with self._state:
            if self.model is None and self._pending is None:
                # No model, and no build has read the logs yet: a build will read
                # these orders, so there is nothing to mark (a bulk load's 10M order
                # rows no longer become a set of Python ints).
                return
            values = np.asarray(cids).tolist()
            self._dirty.update(values)
            if self._pending is not None:
                self._pending.update(values)

    def rebuild(self, config: dict | RecsConfig | None = None) -> dict[str, Any]:
        """Build a model aside and swap it in; its stats. Lookups keep using the old
        model meanwhile; writers wait only while the event logs are read. `config`
        changes some settings (the others stay as they are)."""
        if isinstance(config, RecsConfig):
            cfg = config
        elif config is not None:
            if not isinstance(config, dict):
                raise InvalidInput.at("config", "expected an object of settings")
            cfg = RecsConfig.from_dict({**asdict(self.config), **config})
        else:
            cfg = self.config
        with self._building:
            return self._build(cfg)

    def _build(self, cfg: RecsConfig) -> dict[str, Any]:
        """Inside the build lock: build and swap in."""

        def extracted() -> None:
            with self._state:
                self._pending = set()

        model = build_model(self._engine.store, cfg, self._engine._lock.read, extracted)
        with self._state:
            self.model = model
            self.config = cfg
            self._dirty = self._pending if self._pending is not None else set()
            self._pending = None
        return model.stats()

    def current(self) -> RecsModel:
        """The model, built on first use (concurrent first lookups share one build)."""
        model = self.model
        if model is None:
            with self._building:
                if self.model is None:
                    self._build(self.config)
            model = self.model
            assert model is not None
        return model

    def to_snapshot(self, w) -> dict | None:
        """The current model into a snapshot (None when there is none yet)."""
        model = self.model
        return None if model is None else model.to_snapshot(w, "recs")

    def restore(self, model: RecsModel | None) -> None:
        """Take a model restored from a snapshot (segd.durability)."""
        if model is not None:
            with self._state:
                self.model = model
                self.config = model.config

    def stats(self) -> dict[str, Any]:
        model = self.model
        if model is None:
            return {"built": False}
        return {"built": True, "dirty_contacts": len(self._dirty), **model.stats()}

    # -- masks ------------------------------------------------------------------------
    def _allowed(self, filters: Any) -> np.ndarray:
        """uint8 over item codes: in stock (NULL counts as in stock) and every filter,
        cached per catalog version and filter text."""
        catalog = self._engine.store.catalog
        if filters is None or isinstance(filters, str):
            text = filters or ""
        else:
            text = json.dumps(filters, sort_keys=True, default=str)
        cache_key = (catalog.version, len(catalog), text)
        hit = self._masks.get(cache_key)
        if hit is not None:
            return hit
        parsed = parse_filters(filters)
        n = len(catalog)
        mask = np.ones(n, dtype=np.uint8)
        stock = catalog.columns.get("in_stock")
        if stock is not None and stock.kind == "bool":
            out = (stock.valid[:n] != 0) & (stock.values[:n] == 0)
            mask[out] = 0
        for i, f in enumerate(parsed):
            if not catalog.has_field(f["field"]):
                raise InvalidInput.at(
                    f"filters[{i}].field",
                    f"unknown catalog field {f['field']!r}"
                    f"{catalog.suggest(f['field'], [])}",
                )
            mask &= catalog.item_filter(
                f["field"], f["op"], f.get("value"), f"filters[{i}].value"
            )[0]
        mask.flags.writeable = False
        if len(self._masks) > 64:
            self._masks.clear()
        self._masks[cache_key] = mask
        return mask

    def _repeatable(self) -> np.ndarray | None:
        catalog = self._engine.store.catalog
        col = catalog.columns.get("repeatable")
        if col is None or col.kind != "bool":
            return None
        key = (catalog.version, len(catalog), "#repeatable")
        hit = self._masks.get(key)
        if hit is None:
            n = len(catalog)
            hit = ((col.valid[:n] != 0) & (col.values[:n] != 0)).astype(np.uint8)
            self._masks[key] = hit
        return hit

    def _bought(self, model: RecsModel, cid: int) -> np.ndarray:
        """Sorted distinct items contact `cid` ever ordered, repeatable ones left out."""
        if cid < model.n_contacts and cid not in self._dirty:
            items = model.bought_items[
                model.bought_off[cid] : model.bought_off[cid + 1]
            ]
        else:  # ordered since the model was read: the live order log
            log = self._engine.store.logs.get("order")
            if log is None or log.dim("item") is None:
                return np.zeros(0, dtype=np.uint32)
            mine = log.rows_of(cid, self._engine.store.n_contacts)
            codes = log.dim("item")[mine.astype(np.intp)]
            items = np.unique(codes[codes != NO_CODE])
        rep = self._repeatable()
        if rep is not None and len(items):
            items = items[rep[items] == 0]
        return np.ascontiguousarray(items, dtype=np.uint32)

    # -- lookups ----------------------------------------------------------------------
    def recommend(
        self,
        kind: str,
        *,
        item_ids: Sequence[str] | None = None,
        customer_id: str | None = None,
        category: str | None = None,
        phrase: str | None = None,
        filters: Any = None,
        limit: int = 10,
        exclude_bought: bool = True,
        event: str = "order",
    ) -> list[tuple[str, float]]:
        model = self.current()
        lock = self._engine._lock
        lock.acquire_read()
        try:
            lookup, seeds = self._prepared(
                model, kind, item_ids, category, phrase, filters, limit,
                exclude_bought, event,
            )  # fmt: skip
            cid = -1 if customer_id is None else self._contact(customer_id)
            exclude = None
            if (
                exclude_bought
                and cid >= 0
                and (cid >= model.n_contacts or cid in self._dirty)
            ):  # ordered since the model was read: the live order log
                exclude = self._bought(model, cid)
            return lookup.run(seeds, cid, exclude)
        finally:
            lock.release_read()

    def recommend_batch(
        self, kind: str, customer_ids: Sequence[str], **kwargs: Any
    ) -> list[list[tuple[str, float]]]:
        """One list per contact, aligned; an unknown contact gets the no-history answer
        (a mass send must not fail on one stale id). The arguments are checked once."""
        names, scores, counts = self.recommend_many(kind, customer_ids, **kwargs)
        # the tuples untracked by the cycle collector (a mass send's would otherwise
        # bring full collections of the caller's heap closer: BENCHMARKS.md)
        return kernels.pair_lists(names, np.ascontiguousarray(scores), counts)

    def recommend_many(
        self,
        kind: str,
        customer_ids: Sequence[str],
        *,
        item_ids: Sequence[str] | None = None,
        category: str | None = None,
        phrase: str | None = None,
        filters: Any = None,
        limit: int = 10,
        exclude_bought: bool = True,
        event: str = "order",
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The batch as flat arrays: (item ids, scores, count per contact), contact i's
        items following contact i-1's. One kernel call for the whole batch."""
        model = self.current()
        with self._engine._lock.read():
            lookup, codes, counts = self._many(
                model, kind, customer_ids, item_ids, category, phrase, filters,
                limit, exclude_bought, event,
            )  # fmt: skip
            names = model.item_names(self._engine.store.catalog)[0]
        keep = np.arange(lookup.limit) < counts[:, None]
        n = len(counts)
        flat_codes = codes[0][: n * lookup.limit].reshape(n, lookup.limit)[keep]
        flat_scores = codes[1][: n * lookup.limit].reshape(n, lookup.limit)[keep]
        return [names[c] for c in flat_codes.tolist()], flat_scores, counts

    def recommend_batch_encoded(
        self, kind: str, customer_ids: list[str], **kwargs: Any
    ) -> bytes:
        """The batch as the serialized ``segd.v1.RecommendBatchResponse`` (one
        ``ContactRecommendations`` per contact, in order): the gRPC RecommendBatch builds
        no message per contact. Arguments and errors as ``recommend_many``."""
        model = self.current()
        with self._engine._lock.read():
            lookup, (items, scores), counts = self._many(
                model, kind, customer_ids, **kwargs
            )
            _, name_off, name_data = model.item_names(self._engine.store.catalog)
        return kernels.encode_batch_results(
            list(customer_ids), items, scores, counts, lookup.limit, name_off,
            name_data,
        )  # fmt: skip

    def _many(
        self,
        model: RecsModel,
        kind: str,
        customer_ids: Sequence[str],
        item_ids: Sequence[str] | None = None,
        category: str | None = None,
        phrase: str | None = None,
        filters: Any = None,
        limit: int = 10,
        exclude_bought: bool = True,
        event: str = "order",
    ) -> tuple[Any, tuple[np.ndarray, np.ndarray], np.ndarray]:
        """Inside the read lock: (lookup, (item codes, scores) in ``limit`` slots per
        contact, counts). One kernel call for the whole batch."""
        seeds = None
        if kind == "personal" or kind == "popular" or kind == "search":
            lookup, _ = self._prepared(
                model, kind, item_ids, category, phrase, filters, limit,
                exclude_bought, event,
            )  # fmt: skip
        else:  # the cart is the same for every contact: a plan of its own
            plan = self._plan(
                model, kind, item_ids, category, phrase, filters, limit,
                exclude_bought, event,
            )  # fmt: skip
            lookup = self._lookup_of(plan)
            seeds = plan.seeds
        store = self._engine.store
        cids = np.ascontiguousarray(
            store.contacts.lookup(pa.array(list(customer_ids), pa.string())),
            dtype=np.uint32,
        )
        n = len(cids)
        lo = np.zeros(n, dtype=np.int64)
        hi = np.zeros(n, dtype=np.int64)
        live = np.zeros(n, dtype=np.uint8)
        live_parts: list[np.ndarray] = []
        if exclude_bought and n:
            known = cids != NO_CODE
            stale = known & (cids >= model.n_contacts)
            if self._dirty:
                dirty = np.fromiter(self._dirty, dtype=np.int64)
                stale |= known & np.isin(cids, dirty)
            start = 0
            for i in np.flatnonzero(stale).tolist():  # ordered since the build
                items = self._bought(model, int(cids[i]))
                lo[i], hi[i], live[i] = start, start + len(items), 1
                live_parts.append(items)
                start += len(items)
        live_items = (
            np.concatenate(live_parts).astype(np.uint32) if live_parts else _NO_ITEMS
        )
        if n < PARALLEL_BATCH:
            items, scores, counts = lookup.many(cids, lo, hi, live, live_items, seeds)
            return lookup, (items, scores), counts
        # the kernel runs without the GIL: two halves on two threads (a mass send)
        cut = n // 2
        parts = [
            _batch_pool().submit(
                lookup.many, cids[a:b], lo[a:b], hi[a:b], live[a:b], live_items, seeds
            )
            for a, b in ((0, cut), (cut, n))
        ]
        done = [part.result() for part in parts]
        # each half's slots are `limit` per contact: concatenated, they line up
        items = np.concatenate(
            [
                d[0][: (b - a) * lookup.limit]
                for d, (a, b) in zip(done, ((0, cut), (cut, n)), strict=True)
            ]
        )
        scores = np.concatenate(
            [
                d[1][: (b - a) * lookup.limit]
                for d, (a, b) in zip(done, ((0, cut), (cut, n)), strict=True)
            ]
        )
        counts = np.concatenate([d[2] for d in done])
        return lookup, (items, scores), counts

    def describe(self, item_ids: Sequence[str]) -> list[dict[str, Any]]:
        """``{item_id, name, category, price}`` of known items, from the live catalog
        (NULL / missing columns give None)."""
        catalog = self._engine.store.catalog
        out = []
        with self._engine._lock.read():
            for item_id in item_ids:
                code = catalog.ids.lookup_one(item_id)
                row: dict[str, Any] = {"item_id": item_id}
                for name in ("name", "category", "price"):
                    row[name] = None if code < 0 else _cell(catalog, name, code)
                out.append(row)
        return out

    def _contact(self, customer_id: str) -> int:
        # the id of a merged contact gives its survivor, which holds all its events
        cid = self._engine.store.contacts.cid_of(customer_id)
        if cid < 0:
            raise ContactNotFound(customer_id)
        return cid

    def _plan(
        self,
        model: RecsModel,
        kind: str,
        item_ids: Sequence[str] | None,
        category: str | None,
        phrase: str | None,
        filters: Any,
        limit: int,
        exclude_bought: bool,
        event: str,
    ) -> _Plan:
        """Check the arguments and resolve everything that does not depend on the
        contact (done once for a whole batch)."""
        if kind not in KINDS:
            raise InvalidInput.at(
                "kind", f"expected one of {', '.join(KINDS)}, got {kind!r}"
            )
        if type(limit) is not int or not 0 < limit <= MAX_LIMIT:
            raise InvalidInput.at("limit", f"expected 1..{MAX_LIMIT}, got {limit!r}")
        e = _EVENT_INDEX.get(event)
        if e is None:
            raise InvalidInput.at(
                "event", f"expected one of {', '.join(POPULAR_EVENTS)}, got {event!r}"
            )
        allowed = self._allowed(filters)
        seeds = self._items(item_ids) if item_ids is not None else _NO_ITEMS
        if kind in ("related", "alternatives") and not len(seeds):
            raise InvalidInput.at("item_ids", f"{kind} needs at least one item id")
        if kind == "alternatives" and len(seeds) != 1:
            raise InvalidInput.at("item_ids", "alternatives takes exactly one item id")
        if kind == "search" and not (phrase or "").strip():
            raise InvalidInput.at("phrase", "search needs a phrase")
        within, within_depth = NO_NODE, 0
        if category:
            within = model.node_index.get(category.strip("/"), -1)
            if within < 0:
                raise CategoryNotFound(category)
            within_depth = model.node_depth[within]
        nodes: list[int] = []  # popularity lists to fill from, in order
        nbrs = model.related
        if kind == "alternatives":
            nbrs = model.alternatives
            leaf = int(model.item_leaf[seeds[0]]) if seeds[0] < model.n_items else 0
            nodes = [leaf]
            if within == NO_NODE and leaf:  # stay in the item's own category sub-tree
                within, within_depth = leaf, model.node_depth[leaf]
        elif kind in ("popular", "search", "personal"):
            seeds = _NO_ITEMS
        if kind == "search":  # where the phrase led others, then the bestsellers
            found = model.phrases.get(normalize_phrase(phrase or ""))
            nodes = [] if found is None else found[0].tolist()
        if within != NO_NODE:
            nodes.append(within)
        max_pop = model.pop_max[e]
        # popular / search: the score is the popularity count; elsewhere the fallback
        # scales into the neighbour scores below it
        scale = 1.0 if kind in ("popular", "search") or max_pop <= 0 else 1.0 / max_pop
        # without seed categories to walk, end with the bestsellers (alternatives stay
        # in the item's sub-tree; a category given is the end already)
        ends_at_root = within == NO_NODE and kind != "alternatives"
        return _Plan(
            model=model,
            kind=kind,
            nbrs=nbrs,
            seeds=seeds,
            weights=np.ones(len(seeds), dtype=np.float32),
            e=e,
            nodes=np.asarray(nodes, dtype=np.uint32),
            nodes_root=np.asarray(nodes + [0] if ends_at_root else nodes, np.uint32),
            allowed=allowed,
            within=within,
            within_depth=within_depth,
            limit=limit,
            scale=scale,
            exclude_bought=exclude_bought,
        )

    def _prepared(
        self,
        model: RecsModel,
        kind: str,
        item_ids: Sequence[str] | None,
        category: str | None,
        phrase: str | None,
        filters: Any,
        limit: int,
        exclude_bought: bool,
        event: str,
    ) -> tuple[Any, np.ndarray | None]:
        """(lookup, seeds) for these arguments: the resolved lookup comes from a cache
        per (model, catalog version) and argument values, so a repeated lookup checks
        only what is its own (the item ids); errors are exactly ``_plan``'s."""
        catalog = self._engine.store.catalog
        key = None
        if (
            kind != "alternatives"  # its plan depends on the item
            and type(kind) is str
            and type(limit) is int
            and type(event) is str
            and (filters is None or type(filters) is str)
            and (category is None or type(category) is str)
            and (phrase is None or type(phrase) is str)
        ):
            key = (kind, category, phrase, filters, limit, event, bool(exclude_bought))
            cached = self._lookups
            if (
                cached[0] is model
                and cached[1] == catalog.version
                and cached[2] == len(catalog)
            ):
                lookup = cached[3].get(key)
                if lookup is not None:
                    seeds = None
                    if item_ids is not None:
                        seeds = self._items(item_ids)
                    if kind == "related":
                        if seeds is None or not len(seeds):
                            raise InvalidInput.at(
                                "item_ids", f"{kind} needs at least one item id"
                            )
                        return lookup, seeds
                    return lookup, None
        plan = self._plan(
            model, kind, item_ids, category, phrase, filters, limit, exclude_bought,
            event,
        )  # fmt: skip
        lookup = self._lookup_of(plan)
        if key is not None:
            cached = self._lookups
            if not (
                cached[0] is model
                and cached[1] == catalog.version
                and cached[2] == len(catalog)
                and len(cached[3]) < 256
            ):
                cached = self._lookups = (model, catalog.version, len(catalog), {})
            cached[3][key] = lookup
        seeds = plan.seeds if kind in ("related", "alternatives") else None
        return lookup, seeds

    def _lookup_of(self, plan: _Plan) -> Any:
        """The native lookup of a plan (kernels.Lookup); the seeds are given per call."""
        model = plan.model
        personal = plan.kind == "personal"
        rep = self._repeatable()
        return kernels.Lookup(
            plan.nbrs.offsets, plan.nbrs.items, plan.nbrs.scores,
            model.rank_off[plan.e], model.rank_items[plan.e],
            model.rank_scores[plan.e], plan.nodes, plan.nodes_root,
            plan.kind in ("related", "personal"), plan.allowed,
            _NO_FLAGS if rep is None else rep, model.id_rank, model.item_nodes,
            plan.within, plan.within_depth, plan.limit, plan.scale, personal,
            model.config.self_weight if personal else 0.0,
            model.pop_bonus[plan.e] if personal else None, model.basket_off,
            model.basket_items, model.basket_weights, model.config.personal_seeds,
            plan.exclude_bought, model.bought_off, model.bought_items,
            model.item_names(self._engine.store.catalog)[0],
        )  # fmt: skip

    def _items(self, item_ids: Sequence[str] | None) -> np.ndarray:
        if item_ids is None:
            return np.zeros(0, dtype=np.uint32)
        if isinstance(item_ids, str):
            item_ids = [item_ids]
        if len(item_ids) > MAX_SEED_ITEMS:
            raise InvalidInput.at(
                "item_ids", f"{len(item_ids)} items, at most {MAX_SEED_ITEMS}"
            )
        catalog = self._engine.store.catalog
        model = self.model
        known = model.item_codes(catalog) if model is not None else {}
        out = []
        for item_id in item_ids:
            if not isinstance(item_id, str):
                raise ItemNotFound(str(item_id))
            code = known.get(item_id)
            if code is None:  # not a model item: the live catalog
                code = catalog.ids.lookup_one(item_id)
                if code < 0:
                    raise ItemNotFound(item_id)
            out.append(code)
        return np.array(out, dtype=np.uint32)
