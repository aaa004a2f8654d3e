"""``segctl contacts show|merge|links|link|unlink|resolve``: one contact's identity."""

from __future__ import annotations

import argparse
from typing import Any

from segd.server.segctl.console import Cli, add_connection_options, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "contacts",
        aliases=["contact"],
        help="one contact: profile, links, merges",
        description="Look at one contact; link identities to it; merge contacts.",
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        v = verbs.add_parser(name, help=help_text, description=help_text)
        add_connection_options(v)
        v.set_defaults(func=func)
        return v

    v = verb(
        "show",
        "profile, links, aggregates and latest events of a contact "
        "(a merged id shows its survivor)",
        cmd_show,
    )
    v.add_argument("customer_id", metavar="ID")
    v.add_argument(
        "--events",
        type=positive_int,
        default=10,
        metavar="N",
        help="latest events to list, 1..1000 (default %(default)s)",
    )
    v = verb(
        "merge",
        "merge MERGED (one or more) into SURVIVOR: events, aggregates, attributes "
        "(survivor wins, merged fills gaps, tags unioned), links and segment "
        "memberships move at once; MERGED's id resolves to SURVIVOR from then on",
        cmd_merge,
    )
    v.add_argument("survivor", metavar="SURVIVOR")
    v.add_argument("merged", metavar="MERGED", nargs="+")
    v = verb("links", "the links of a contact (kind, value)", cmd_links)
    v.add_argument("customer_id", metavar="ID")
    v = verb("link", "link KIND VALUE to a contact", cmd_link)
    v.add_argument("customer_id", metavar="ID")
    v.add_argument("kind", metavar="KIND", help="email, phone, card, crm_id, device_id")
    v.add_argument("value", metavar="VALUE")
    v = verb("unlink", "remove a link of a contact", cmd_unlink)
    v.add_argument("customer_id", metavar="ID")
    v.add_argument("kind", metavar="KIND")
    v.add_argument("value", metavar="VALUE")
    v = verb(
        "resolve",
        "which contact a link value names (kind customer_id: a possibly merged id)",
        cmd_resolve,
    )
    v.add_argument("kind", metavar="KIND")
    v.add_argument("value", metavar="VALUE")


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def cmd_show(cli: Cli) -> int:
    c = cli.client.get_contact(cli.args.customer_id, cli.args.events)
    if cli.json:
        cli.emit_json(c)
        return 0
    cli.kv_table(
        [("customer_id", c["customer_id"])]
        + [(k, _text(v)) for k, v in c["profile"].items()]
    )
    cli.line("")
    links = [(k, v) for k, vs in c["links"].items() for v in vs]
    if links:
        cli.table(["kind", "value"], [[k, v] for k, v in links])
    else:
        cli.note("(no links)")
    cli.line("")
    cli.kv_table([(k, _text(v)) for k, v in c["aggregates"].items()])
    cli.line("")
    if c["events"]:
        cli.table(
            ["time", "type", "merged from"],
            [[e["time"], e["type"], e["merged_from"] or ""] for e in c["events"]],
        )
    else:
        cli.note("(no events)")
    return 0


def cmd_merge(cli: Cli) -> int:
    a = cli.args
    n = cli.client.merge_contacts(a.survivor, a.merged)
    if cli.json:
        cli.emit_json({"survivor": a.survivor, "merged": a.merged, "count": n})
    else:
        cli.line(f"merged {', '.join(a.merged)} into {a.survivor}")
    return 0


def cmd_links(cli: Cli) -> int:
    links = cli.client.get_contact(cli.args.customer_id, 1)["links"]
    if cli.json:
        cli.emit_json(links)
        return 0
    rows = [[k, v] for k, vs in links.items() for v in vs]
    if rows:
        cli.table(["kind", "value"], rows)
    else:
        cli.note("(no links)")
    return 0


def cmd_link(cli: Cli) -> int:
    a = cli.args
    value = cli.client.link_identity(a.customer_id, a.kind, a.value)
    if cli.json:
        cli.emit_json({"customer_id": a.customer_id, "kind": a.kind, "value": value})
    else:
        cli.line(f"linked {a.kind} {value} to {a.customer_id}")
    return 0


def cmd_unlink(cli: Cli) -> int:
    a = cli.args
    cli.client.unlink_identity(a.customer_id, a.kind, a.value)
    if cli.json:
        cli.emit_json({"customer_id": a.customer_id, "kind": a.kind, "unlinked": True})
    else:
        cli.line(f"unlinked {a.kind} {a.value} from {a.customer_id}")
    return 0


def cmd_resolve(cli: Cli) -> int:
    who = cli.client.resolve(cli.args.kind, cli.args.value)
    if cli.json:
        cli.emit_json({"customer_id": who})
        return 0
    if who is None:
        cli.note("(nobody)")
        return 1
    cli.line(who)
    return 0
