"""A bulk load by link columns vs a load of the same rows re-keyed (issue 12).

Generated events arrive in a bulk ``load_events`` where most rows name their contact by
a device id and/or an email instead of (or besides) the customer_id; some emails were
linked before the load. The oracle is an independent resolution of the same rows — a
plain Python union-find over (customer_id, email, device) values: a group with a
customer_id is that contact; a group without one is a new contact named after the first
link (in kind order) of its first row — and an engine that loads the rows re-keyed to
those names, without link columns. Every random AST of the core's generator must give
the same members, and every link value must resolve to the oracle's contact.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segd import Engine
from segd.datagen import generate
from segd.identity import LINK_KINDS
from tests.differential.test_engine_vs_duckdb import SAVED, _strategy

SEED = 31
KINDS = ("email", "device_id")  # the link columns of the load


def _identity_rows(events: pa.Table, rng: np.random.Generator) -> list[dict]:
    """Per event row: its customer_id or None, and link values (each contact's own)."""
    out = []
    for cid in events["customer_id"].to_pylist():
        mode = int(rng.integers(0, 5))
        row: dict = {"customer_id": cid if mode <= 1 else None}
        if mode in (1, 2, 4):
            row["device_id"] = f"dev-{cid}"
        if mode in (3, 4):
            row["email"] = f"{cid}@Mail.Test"  # normalised to lower case
        out.append(row)
    return out


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b) -> None:
        self.parent[self.find(a)] = self.find(b)


def _oracle(rows: list[dict], linked: dict[str, str]) -> tuple[list[str], dict]:
    """The contact each row names, and (kind, value) -> contact, resolved independently.
    `linked`: email (normalised) -> customer_id, linked before the load."""
    uf = UnionFind()
    for email, cid in linked.items():
        uf.union(("email", email), ("id", cid))
    for row in rows:
        nodes = [("id", row["customer_id"])] if row["customer_id"] else []
        nodes += [(k, row[k].lower()) for k in KINDS if row.get(k)]
        for node in nodes[1:]:
            uf.union(nodes[0], node)
        uf.find(nodes[0])
    named: dict = {}
    for node in list(uf.parent):
        if node[0] == "id":
            root = uf.find(node)
            assert named.setdefault(root, node[1]) == node[1], "conflicting data"
    for row in rows:  # groups without a customer_id: the first row's first link
        if row["customer_id"]:
            continue
        first = next(k for k in LINK_KINDS if k in KINDS and row.get(k))
        root = uf.find((first, row[first].lower()))
        named.setdefault(root, f"{first}:{row[first].lower()}")
    names = []
    for row in rows:
        node = ("id", row["customer_id"]) if row["customer_id"] else None
        node = node or next((k, row[k].lower()) for k in KINDS if row.get(k))
        names.append(named[uf.find(node)])
    values = {n: named[uf.find(n)] for n in uf.parent if n[0] != "id"}
    return names, values


@pytest.fixture(scope="module")
def world():
    data = generate(300, seed=SEED)
    rng = np.random.default_rng(SEED)
    events = data.events
    rows = _identity_rows(events, rng)
    ids = data.contacts["customer_id"].to_pylist()
    linked = {f"{c}@mail.test": c for c in ids[::3]}
    names, values = _oracle(rows, linked)

    def column(key: str) -> pa.Array:
        return pa.array([r.get(key) for r in rows], pa.string())

    by_link = events.drop_columns(["customer_id"])
    by_link = by_link.append_column("customer_id", column("customer_id"))
    for kind in KINDS:
        by_link = by_link.append_column(kind, column(kind))
    rekeyed = events.drop_columns(["customer_id"]).append_column(
        "customer_id", pa.array(names, pa.string())
    )
    engines = []
    for table, links in ((by_link, linked), (rekeyed, {})):
        eng = Engine()
        eng.load_items(data.items)
        eng.load_contacts(data.contacts)
        for email, cid in links.items():
            eng.link(cid, "email", email)
        eng.load_events(table, rows_per_chunk=997)
        for name, ast in SAVED.items():
            eng.create_segment(name, ast)
        engines.append(eng)
    return data, engines[0], engines[1], values, names


def test_the_load_resolves_like_the_oracle(world):
    data, eng, rekeyed, values, names = world
    assert len(set(names)) > len(set(data.events["customer_id"].to_pylist()))
    assert any(n.startswith("device_id:") for n in names)
    for (kind, value), want in values.items():
        assert eng.resolve(kind, value) == want, (kind, value)
    a, b = eng.stats(), rekeyed.stats()
    assert (a["contacts"], a["events"], a["event_types"]) == (
        b["contacts"],
        b["events"],
        b["event_types"],
    )


@settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_segments_match_the_rekeyed_load(world, data):
    dataset, eng, rekeyed, _, _ = world
    ast = data.draw(_strategy(dataset))
    got = set(eng.segment(ast, now=dataset.now).ids())
    want = set(rekeyed.segment(ast, now=dataset.now).ids())
    assert got == want, (
        f"by link {len(got)} vs re-keyed {len(want)} for {ast}\n"
        f"only by link: {sorted(got - want)[:5]} only re-keyed: {sorted(want - got)[:5]}"
    )
