"""gRPC SegmentService.Changes (follow, resume after a reconnect) and History, and
``segctl segment history`` / ``changes``, against a real in-process server."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from segd import Engine
from segd.server.client import SegdRpcError
from tests.integration.conftest import run_segctl

DAY = 86_400
T = 1_735_689_600  # 2025-01-01T00:00:00Z


def _engine() -> Engine:
    e = Engine()
    e.upsert_contacts([{"customer_id": f"c{i}"} for i in range(5)])
    e.append_events(
        [{"customer_id": f"c{i}", "type": "view", "ts": T + i * DAY} for i in range(5)]
    )
    e.create_segment("recent", "view() in last 2 days")
    e.advance(T)
    return e


def test_changes_stream_and_history(make_server: Any) -> None:
    srv = make_server(engine=_engine())
    client = srv.client(timeout=20.0)
    srv.engine.advance(T + 10 * DAY)
    rows = list(client.segment_changes())
    local = srv.engine.segment_changes().to_pylist()
    assert [(r["customer_id"], r["change"], r["at_ms"]) for r in rows] == [
        (r["customer_id"], r["change"], int(r["at"].timestamp() * 1000)) for r in local
    ]
    assert [r["position"] for r in rows] == list(range(len(rows)))
    # c0 entered just after T and left just after T + 2 d
    assert rows[0]["at_ms"] == T * 1000 and rows[0]["cause"] == "time"
    # resume: from a position on, nothing lost or repeated
    tail = list(client.segment_changes("recent", from_position=4))
    assert [r["position"] for r in tail] == list(range(4, len(rows)))
    history = client.segment_history("recent")
    assert history[0] == {"day": "2025-01-01", "count": 1}
    assert history[-1]["count"] == 0 and history[-1]["day"] == "2025-01-11"
    with pytest.raises(SegdRpcError) as err:
        list(client.segment_changes("nope"))
    assert err.value.code.name == "NOT_FOUND"


def test_follow_sends_new_changes_and_resumes(make_server: Any) -> None:
    srv = make_server(engine=_engine())
    client = srv.client(timeout=20.0)
    got: list[dict] = []
    done = threading.Event()

    def follow(start: int, want: int) -> None:
        for row in client.segment_changes(from_position=start, follow=True):
            got.append(row)
            if len(got) >= want:
                break
        done.set()

    reader = threading.Thread(target=follow, args=(0, 2), daemon=True)
    reader.start()
    time.sleep(0.3)
    srv.engine.advance(T + 1)  # c0 enters
    srv.engine.advance(T + DAY + 1)  # c1 enters
    assert done.wait(10)
    assert [(r["customer_id"], r["change"]) for r in got] == [
        ("c0", "entered"),
        ("c1", "entered"),
    ]
    # a reconnect resumes after the last position seen
    last = got[-1]["position"]
    srv.engine.advance(T + 3 * DAY + 1)
    more = list(client.segment_changes(from_position=last + 1))
    assert [(r["customer_id"], r["change"]) for r in more] == [
        ("c2", "entered"),
        ("c0", "exited"),
        ("c3", "entered"),
        ("c1", "exited"),
    ]
    assert more[0]["position"] == last + 1


def test_segctl_history_and_changes(make_server: Any, tmp_path) -> None:
    srv = make_server(engine=_engine())
    srv.engine.advance(T + 6 * DAY)
    res = run_segctl(srv, "segment", "history", "recent")
    assert res.code == 0, res.err
    assert "2025-01-01" in res.out and "2025-01-07" in res.out
    res = run_segctl(srv, "segment", "changes", "recent")
    assert res.code == 0, res.err
    # 5 entries, 4 exits: c4 (viewed at T + 4 d) is a member until T + 6 d inclusive
    assert len(res.out.strip().splitlines()) == 9
    pytest.importorskip("matplotlib")
    png = tmp_path / "h.png"
    res = run_segctl(srv, "segment", "history", "recent", "--png", str(png))
    assert res.code == 0, res.err
    assert png.read_bytes()[:4] == b"\x89PNG"
