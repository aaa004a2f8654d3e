"""The store of one shard: contacts, catalog, event logs, dictionaries and rollups.

It owns the data and nothing else: validation lives in ``segd.ingest`` (the one path every
mutation takes, so a write-ahead log can sit in front of it) and reading in
``segd.segments``.
"""

from __future__ import annotations

from dataclasses import dataclass

from segd.aggindex import ValueIndexes
from segd.aggregates import Aggregates
from segd.catalog import Catalog
from segd.contacts import ContactStore
from segd.events import EventLog
from segd.identity import Identity
from segd.native.idmap import IdMap

# Event properties segd knows by name; any other text column of an event batch is a custom
# property and becomes a dimension too.
KNOWN_DIMS = ("phrase", "advertiser", "campaign", "ad", "channel", "order_id")
BUILTIN_EVENT_TYPES = (
    "view",
    "page_view",
    "category_view",
    "article_view",
    "visit",
    "add_to_favorites",
    "unsubscribe",
    "spam_complaint",
    "add_to_cart",
    "remove_from_cart",
    "order",
    "search",
    "email_open",
    "email_click",
    "email_delivered",
    "message_delivered",
    "message_opened",
    "message_clicked",
    "ad_view",
    "ad_click",
    "ad_order",
    "goal",
)


@dataclass(frozen=True)
class LoadedSource:
    """An event file loaded before, by the digest of its content: ``segctl load`` refuses
    to load the same content twice without ``--force`` (files without event ids cannot be
    deduplicated row by row)."""

    digest: str
    name: str
    rows: int
    loaded_ms: int


class Store:
    """All data of one shard (see module docstring)."""

    def __init__(self) -> None:
        self.contacts = ContactStore()
        self.catalog = Catalog()
        self.logs: dict[str, EventLog] = {}
        self.dim_maps: dict[str, IdMap] = {d: IdMap() for d in KNOWN_DIMS}
        self.aggregates = Aggregates()
        # Every event_id applied so far: a repeated id is dropped (dedup by message id).
        self.event_ids = IdMap()
        # Content digests of event files loaded without event ids (see LoadedSource).
        self.sources: dict[str, LoadedSource] = {}
        # Identity links per kind and merge bookkeeping (segd.identity).
        self.identity = Identity()
        # Sorted value indexes over aggregates and numeric attributes (segd.aggindex):
        # built on first use, never persisted, kept exact by Engine._touched.
        self.value_index = ValueIndexes()

    @property
    def n_contacts(self) -> int:
        return len(self.contacts)

    @property
    def n_events(self) -> int:
        return sum(log.n for log in self.logs.values())

    def log(self, event_type: str) -> EventLog:
        """The log of a type, created on first use."""
        log = self.logs.get(event_type)
        if log is None:
            log = self.logs[event_type] = EventLog(event_type)
        return log

    def known_event_types(self) -> set[str]:
        from segd.segments.registry import SEGMENT_EVENT_TYPES

        return set(BUILTIN_EVENT_TYPES) | set(SEGMENT_EVENT_TYPES) | set(self.logs)

    def event_fields(self) -> set[str]:
        """Every field an event filter may name: catalog fields, amount, dimensions."""
        return {*self.catalog.fields(), "amount", "segment", *self.dim_maps}

    def sync_sizes(self) -> None:
        """Per-contact arrays follow the contact count."""
        self.aggregates.resize(len(self.contacts))

    def memory(self) -> dict[str, int]:
        n = len(self.contacts)
        parts = {
            "idmap": self.contacts.ids.nbytes(),
            "attributes": self.contacts.nbytes() - self.contacts.ids.nbytes(),
            "aggregates": self.aggregates.nbytes(n),
            "events": sum(log.nbytes() for log in self.logs.values()),
            "dictionaries": sum(m.nbytes() for m in self.dim_maps.values())
            + self.event_ids.nbytes(),
            "catalog": self.catalog.nbytes(),
            "identity": self.identity.nbytes(),
            "value_indexes": self.value_index.nbytes(),
        }
        parts["total"] = sum(parts.values())
        return parts

    # -- snapshots (segd.snapshot) -------------------------------------------------------
    def to_snapshot(self, w) -> dict:
        """Write every array of the store through the snapshot writer `w`; returns the
        metadata (msgpack-able) that ``from_snapshot`` needs to put them back together."""
        for i, dim_map in enumerate(self.dim_maps.values()):
            w.idmap(f"dim{i}", dim_map)
        return {
            "contacts": self.contacts.to_snapshot(w, "contacts"),
            "catalog": self.catalog.to_snapshot(w, "catalog"),
            "dim_maps": list(self.dim_maps),
            "logs": [
                log.to_snapshot(w, f"log{i}")
                for i, log in enumerate(self.logs.values())
            ],
            "aggregates": self.aggregates.to_snapshot(
                w, "aggregates", len(self.contacts)
            ),
            "event_ids": _event_ids_to_snapshot(w, self.event_ids),
            "sources": [
                [src.digest, src.name, src.rows, src.loaded_ms]
                for src in self.sources.values()
            ],
            "identity": self.identity.to_snapshot(w),
        }

    @classmethod
    def from_snapshot(cls, r, meta: dict) -> Store:
        store = cls()
        store.contacts = ContactStore.from_snapshot(r, "contacts", meta["contacts"])
        store.catalog = Catalog.from_snapshot(r, "catalog", meta["catalog"])
        store.dim_maps = {
            name: r.idmap(f"dim{i}") for i, name in enumerate(meta["dim_maps"])
        }
        store.logs = {}
        for i, log_meta in enumerate(meta["logs"]):
            log = EventLog.from_snapshot(r, f"log{i}", log_meta)
            store.logs[log.type] = log
        store.aggregates = Aggregates.from_snapshot(r, "aggregates", meta["aggregates"])
        if meta.get("event_ids"):  # snapshots before event ids had none
            store.event_ids = r.idmap("event_ids")
        store.sources = {
            digest: LoadedSource(digest, name, rows, loaded_ms)
            for digest, name, rows, loaded_ms in meta.get("sources", [])
        }
        if meta.get("identity"):  # snapshots before identity links had none
            store.identity = Identity.from_snapshot(r, meta["identity"])
        return store


def _event_ids_to_snapshot(w, event_ids: IdMap) -> bool:
    """The set of applied event ids, when there is one (most shops send none)."""
    if len(event_ids) == 0:
        return False
    w.idmap("event_ids", event_ids)
    return True
