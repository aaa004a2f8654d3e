"""``segctl rfm compute | matrix | transitions | history | config`` (docs/segctl.md)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from segd.server.segctl.console import (
    Cli,
    UsageError,
    add_connection_options,
    human_int,
)
from segd.v1 import rfm_pb2 as pb
from segd.v1 import rfm_pb2_grpc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rfm",
        help="RFM scores, the retention matrix, transitions and their configuration",
        description="RFM analysis (docs/rfm.md).",
    )
    add_connection_options(p)
    verbs = p.add_subparsers(dest="rfm_command", metavar="VERB", required=True)

    c = verbs.add_parser("compute", help="compute now (or --as-of) and make it current")
    c.add_argument("--as-of", help="ISO time (default: now)")
    c.add_argument("--window-days", type=int, default=0)
    c.add_argument("--scale", type=int, default=0)
    c.add_argument("--method", choices=["quantile", "thresholds"])
    add_connection_options(c)
    c.set_defaults(func=cmd_compute)

    m = verbs.add_parser(
        "matrix", help="counts and shares per cell (the retention matrix)"
    )
    m.add_argument("--by", choices=["rf", "rfm", "segment"], default="rf")
    m.add_argument("--as-of", help="ISO time: compute for it without storing")
    m.add_argument("--png", metavar="FILE", help="draw a heatmap (needs matplotlib)")
    add_connection_options(m)
    m.set_defaults(func=cmd_matrix)

    t = verbs.add_parser("transitions", help="who moved from which cell to which")
    t.add_argument("--since", help="ISO time, inclusive")
    t.add_argument("--until", help="ISO time, exclusive")
    t.add_argument("--to", help="a segment name or code that was entered")
    t.add_argument("--from", dest="from_", help="a segment name or code that was left")
    t.add_argument("--limit", type=int, default=1000)
    add_connection_options(t)
    t.set_defaults(func=cmd_transitions)

    h = verbs.add_parser("history", help="daily counts per named segment")
    h.add_argument("--since", help="YYYY-MM-DD, inclusive")
    h.add_argument("--until", help="YYYY-MM-DD, exclusive")
    h.add_argument("--png", metavar="FILE", help="draw the counts over time")
    add_connection_options(h)
    h.set_defaults(func=cmd_history)

    g = verbs.add_parser("config", help="show, or change with --set / --file")
    g.add_argument("--set", metavar="JSON", help="e.g. '{\"window_days\": 180}'")
    g.add_argument("--file", help="a JSON file with (part of) the configuration")
    add_connection_options(g)
    g.set_defaults(func=cmd_config)


def _stub(cli: Cli) -> rfm_pb2_grpc.RfmServiceStub:
    client = cli.client
    stub: rfm_pb2_grpc.RfmServiceStub | None = getattr(client, "_rfm_stub", None)
    if stub is None:
        stub = rfm_pb2_grpc.RfmServiceStub(client._channel)
        setattr(client, "_rfm_stub", stub)  # noqa: B010 (SegdClient has no such slot)
    return stub


def _ms(text: str | None, flag: str) -> int:
    if not text:
        return 0
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag}: expected an ISO time, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _status_rows(s: pb.RfmStatus) -> list[tuple[str, Any]]:
    if not s.computed:
        return [("computed", "no (run: segctl rfm compute)")]
    rows = [
        ("as_of", _iso(s.as_of_ms)),
        ("window", f"{s.window_days} days"),
        ("scale / method", f"{s.scale} / {s.method}"),
        ("contacts with orders", human_int(s.contacts)),
        ("scored (order in window)", human_int(s.scored)),
        ("transitions recorded", human_int(s.transitions)),
    ]
    by_size = sorted(s.segments.items(), key=lambda kv: (-kv[1], kv[0]))
    return rows + [(f"  {k}", human_int(v)) for k, v in by_size]


def cmd_compute(cli: Cli) -> int:
    a = cli.args
    req = pb.ComputeRequest(
        as_of_ms=_ms(a.as_of, "--as-of"),
        window_days=a.window_days,
        scale=a.scale,
        method=a.method or "",
    )
    resp = cli.client.call(_stub(cli).Compute, req, idempotent=False)
    if cli.json:
        cli.emit_json(json_format.MessageToDict(resp, preserving_proto_field_name=True))
        return 0
    cli.kv_table(
        _status_rows(resp.status)
        + [
            ("new transitions", human_int(resp.new_transitions)),
            ("took", f"{resp.duration_ms:,.1f} ms"),
        ]
    )
    return 0


def cmd_matrix(cli: Cli) -> int:
    a = cli.args
    req = pb.MatrixRequest(as_of_ms=_ms(a.as_of, "--as-of"), by=a.by)
    resp = cli.client.call(_stub(cli).Matrix, req)
    if cli.json:
        cli.emit_json(json_format.MessageToDict(resp, preserving_proto_field_name=True))
    else:
        cli.note(f"as of {_iso(resp.as_of_ms)}")
        if a.by == "segment":
            cli.table(
                ["segment", "count", "share"],
                [[c.segment, human_int(c.count), f"{c.share:.1%}"] for c in resp.cells],
                right=["count", "share"],
            )
        elif a.by == "rf":
            _print_rf_grid(cli, resp)
        else:
            cli.table(
                ["r", "f", "m", "count", "share"],
                [
                    [c.r, c.f, c.m, human_int(c.count), f"{c.share:.1%}"]
                    for c in resp.cells
                    if c.count
                ],
                right=["count", "share"],
            )
    if a.png:
        draw_matrix_png(resp, a.png)
        cli.note(f"wrote {a.png}")
    return 0


def _print_rf_grid(cli: Cli, resp: pb.MatrixResponse) -> None:
    """R down (most recent on top), F across: 'count (share)' per cell."""
    s = resp.scale
    grid = {(c.r, c.f): c for c in resp.cells}
    columns = ["R \\ F", *(f"F{f}" for f in range(1, s + 1))]
    rows = []
    for r in range(s, 0, -1):
        row: list[Any] = [f"R{r}"]
        for f in range(1, s + 1):
            c = grid.get((r, f))
            row.append("" if c is None else f"{c.count:,} ({c.share:.1%})")
        rows.append(row)
    cli.table(columns, rows, right=columns[1:])


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--png needs matplotlib: pip install 'segd[plot]'") from None
    return plt


def draw_matrix_png(resp: pb.MatrixResponse, path: str) -> None:
    plt = _pyplot()
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 5.5))
    if resp.by == "segment":
        names = [c.segment for c in resp.cells]
        counts = [c.count for c in resp.cells]
        ax.barh(names, counts, color="#4878a8")
        for i, c in enumerate(resp.cells):
            ax.text(c.count, i, f" {c.count:,} ({c.share:.1%})", va="center")
        ax.invert_yaxis()
        ax.set_xlabel("contacts")
    else:
        s = resp.scale
        grid = np.zeros((s, s))
        for c in resp.cells:
            grid[s - c.r, c.f - 1] += c.count
        total = grid.sum() or 1
        im = ax.imshow(grid, cmap="YlGnBu")
        dark = grid.max() / 2 if grid.max() else 1
        for i in range(s):
            for j in range(s):
                ax.text(
                    j, i, f"{int(grid[i, j]):,}\n{grid[i, j] / total:.1%}",
                    ha="center", va="center", fontsize=8,
                    color="white" if grid[i, j] > dark else "black",
                )  # fmt: skip
        ax.set_xticks(range(s), [f"F{f}" for f in range(1, s + 1)])
        ax.set_yticks(range(s), [f"R{r}" for r in range(s, 0, -1)])
        fig.colorbar(im, ax=ax, label="contacts")
    ax.set_title(f"RFM {resp.by} matrix as of {_iso(resp.as_of_ms)[:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_transitions(cli: Cli) -> int:
    a = cli.args
    req = pb.TransitionsRequest(
        since_ms=_ms(a.since, "--since"),
        until_ms=_ms(a.until, "--until"),
        to=a.to or "",
        from_value=a.from_ or "",
        limit=a.limit,
    )
    resp = cli.client.call(_stub(cli).Transitions, req)
    if cli.json:
        cli.emit_json(json_format.MessageToDict(resp, preserving_proto_field_name=True))
        return 0
    cli.table(
        ["customer_id", "at", "from", "to", "from segment", "to segment"],
        [
            [t.customer_id, _iso(t.at_ms), t.from_code, t.to_code, t.from_segment,
             t.to_segment]
            for t in resp.transitions
        ],
    )  # fmt: skip
    if resp.total_size > len(resp.transitions):
        cli.note(f"showing the newest {len(resp.transitions)} of {resp.total_size:,}")
    return 0


def cmd_history(cli: Cli) -> int:
    a = cli.args
    req = pb.HistoryRequest(since=a.since or "", until=a.until or "")
    resp = cli.client.call(_stub(cli).History, req)
    segs = [c for c in resp.counts if c.kind == "segment"]
    if cli.json:
        cli.emit_json(json_format.MessageToDict(resp, preserving_proto_field_name=True))
    else:
        names = list(dict.fromkeys(c.name for c in segs))
        days = sorted({c.day for c in segs})
        by = {(c.day, c.name): c.count for c in segs}
        cli.table(
            ["day", *names],
            [[d, *(human_int(by.get((d, n))) for n in names)] for d in days],
            right=names,
        )
    if a.png:
        plt = _pyplot()
        names = list(dict.fromkeys(c.name for c in segs))
        days = sorted({c.day for c in segs})
        by = {(c.day, c.name): c.count for c in segs}
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for n in names:
            ax.plot(days, [by.get((d, n), 0) for d in days], marker="o", label=n)
        ax.set_ylabel("contacts")
        ax.set_title("RFM segments per day")
        ax.legend(fontsize=8)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(a.png, dpi=110)
        plt.close(fig)
        cli.note(f"wrote {a.png}")
    return 0


def cmd_config(cli: Cli) -> int:
    a = cli.args
    if a.set and a.file:
        raise UsageError("give --set or --file, not both")
    text = a.set
    if a.file:
        try:
            text = Path(a.file).read_text()
        except OSError as exc:
            raise UsageError(f"--file: {exc}") from None
    if text:
        try:
            change = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"not JSON: {exc}") from None
        req = pb.SetConfigRequest()
        json_format.ParseDict(change, req.config)
        resp = cli.client.call(_stub(cli).SetConfig, req, idempotent=False)
    else:
        resp = cli.client.call(_stub(cli).GetConfig, pb.GetConfigRequest())
    config = json_format.MessageToDict(resp.config)
    if cli.json:
        cli.emit_json({"config": config, "overlaps": list(resp.overlaps)})
        return 0
    cli.kv_table(
        [
            (k, json.dumps(_ints(v)))
            for k, v in config.items()
            if k not in ("rules", "group_rules")
        ]
    )
    cli.line("")
    cli.table(
        ["#", "segment", "orders", "days"],
        [
            [i, r["segment"], _span(r["orders"]), _span(r["days"])]
            for i, r in enumerate(config.get("rules", []))
        ],
    )
    for group, rules in config.get("group_rules", {}).items():
        cli.line("")
        cli.table(
            ["#", "segment", "orders", "days"],
            [
                [i, r["segment"], _span(r["orders"]), _span(r["days"])]
                for i, r in enumerate(rules)
            ],
            title=f"{config.get('group_by')} = {group}",
        )
    for note in resp.overlaps:
        cli.note(f"note: {note}")
    return 0


def _ints(value: Any) -> Any:
    """JSON numbers come back as floats from a Struct: print 365, not 365.0."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def _span(pair: list) -> str:
    lo, hi = (None if v is None else int(v) for v in pair)
    return f"{lo}+" if hi is None else (str(lo) if lo == hi else f"{lo}-{hi}")
