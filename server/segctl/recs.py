"""``segctl recs related | alternatives | popular | personal | search | rebuild | status``
(docs/segctl.md, docs/recommendations.md)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from segd.server.segctl.console import (
    Cli,
    UsageError,
    add_connection_options,
    human_int,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recs",
        help="product recommendations: related, alternatives, popular, personal, search",
        description="Recommendation lookups (docs/recommendations.md).",
    )
    add_connection_options(p)
    verbs = p.add_subparsers(dest="recs_command", metavar="VERB", required=True)

    def lookup(name: str, help_text: str) -> argparse.ArgumentParser:
        v = verbs.add_parser(name, help=help_text)
        v.add_argument("--limit", type=positive_int, default=10)
        v.add_argument("--category", help="stay inside this category sub-tree")
        v.add_argument(
            "--filters", help="catalog conditions: 'colour = \"red\", price < 5000'"
        )
        v.add_argument("--customer", help="leave out what this contact bought")
        v.add_argument(
            "--include-bought", action="store_true", help="keep bought items"
        )
        add_connection_options(v)
        v.set_defaults(func=cmd_lookup, kind=name)
        return v

    lookup("related", "items that go with one item or a cart").add_argument(
        "items", nargs="+", metavar="ITEM"
    )
    lookup(
        "alternatives", "items like this one (same category, co-viewed)"
    ).add_argument("items", nargs=1, metavar="ITEM")
    lookup(
        "popular", "bestsellers, overall or in --category, with --filters"
    ).add_argument(
        "--event",
        choices=["order", "add_to_cart", "view"],
        default="order",
        help="what popularity counts (distinct contacts)",
    )
    lookup("personal", "specially for a contact").add_argument(
        "customer_id", metavar="CUSTOMER"
    )
    lookup("search", "for a search phrase (also one with no results)").add_argument(
        "phrase", metavar="PHRASE"
    )

    r = verbs.add_parser("rebuild", help="build the model now")
    r.add_argument(
        "--set", metavar="JSON", help="settings, e.g. '{\"window_days\": 30}'"
    )
    add_connection_options(r)
    r.set_defaults(func=cmd_rebuild)

    s = verbs.add_parser("status", help="the current model: age, size, settings")
    add_connection_options(s)
    s.set_defaults(func=cmd_status)


def cmd_lookup(cli: Cli) -> int:
    a = cli.args
    customer = getattr(a, "customer_id", None) or a.customer
    rows = cli.client.recommend(
        a.kind,
        item_ids=getattr(a, "items", None),
        customer_id=customer,
        category=a.category,
        phrase=getattr(a, "phrase", None),
        filters=a.filters,
        limit=a.limit,
        exclude_bought=not a.include_bought,
        event=getattr(a, "event", "order"),
        details=True,
    )
    if cli.json:
        cli.emit_json(rows)
        return 0
    if not rows:
        cli.note("no items")
        return 0
    cli.table(
        ["item", "name", "category", "price", "score"],
        [
            [
                r["item_id"],
                r["name"],
                r["category"],
                None if r["price"] is None else f"{r['price']:,.2f}",
                _score(r["score"]),
            ]
            for r in rows
        ],
        right=["price", "score"],
    )
    return 0


def _score(score: float) -> str:
    return f"{score:,.0f}" if score >= 1 and score == int(score) else f"{score:.4f}"


def _status_rows(st: dict[str, Any]) -> list[tuple[str, Any]]:
    if not st.get("built"):
        return [("built", "no (run: segctl recs rebuild)")]
    as_of = datetime.fromtimestamp(int(st.get("as_of_ms", 0)) / 1000, UTC)
    return [
        ("as_of", as_of.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("items", human_int(int(st.get("items", 0)))),
        ("contacts", human_int(int(st.get("contacts", 0)))),
        ("categories", human_int(int(st.get("categories", 0)))),
        ("phrases", human_int(int(st.get("phrases", 0)))),
        ("related pairs", human_int(int(st.get("related_pairs", 0)))),
        ("alternative pairs", human_int(int(st.get("alternative_pairs", 0)))),
        ("memory", f"{int(st.get('bytes', 0)) / 1e6:,.1f} MB"),
        ("build", f"{float(st.get('build_seconds', 0)):.2f} s"),
        ("settings", st.get("config_json", "")),
    ]


def cmd_rebuild(cli: Cli) -> int:
    config = None
    if cli.args.set:
        try:
            config = json.loads(cli.args.set)
        except ValueError as exc:
            raise UsageError(f"--set: not JSON: {exc}") from None
    st = cli.client.rebuild_recommendations(config)
    if cli.json:
        cli.emit_json(st)
    else:
        cli.kv_table(_status_rows(st))
    return 0


def cmd_status(cli: Cli) -> int:
    st = cli.client.recommendation_status()
    if cli.json:
        cli.emit_json(st)
    else:
        cli.kv_table(_status_rows(st))
    return 0
