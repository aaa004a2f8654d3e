"""The read lane (``--read-workers``): quick reads on their own small pool, over a real
server on 127.0.0.1.

Count, Members, Sample, Get and health Check run on the ``segd-rpc-read`` threads;
everything else (writes, streams, the other reads) on the shared pool, so a read lane
held up by slow reads never stops a write. Results, errors and authentication are the
same on either pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pytest

from segd.server.app import READ_LANE_METHODS, StartupError, build_app
from segd.server.client import SegdRpcError
from segd.server.settings import Settings
from tests.integration.conftest import Running, expected, seeded_engine

READ_THREAD = "segd-rpc-read"


def _record_threads(engine: Any, method: str) -> list[str]:
    """Patch ``engine.<method>`` to note the name of each thread that calls it."""
    names: list[str] = []
    original = getattr(engine, method)

    def recording(*args: Any, **kwargs: Any) -> Any:
        names.append(threading.current_thread().name)
        return original(*args, **kwargs)

    setattr(engine, method, recording)
    return names


def test_reads_run_on_the_lane_and_writes_on_the_shared_pool(
    make_server: Callable[..., Running],
) -> None:
    engine = seeded_engine()
    reads = _record_threads(engine, "segment")
    writes = _record_threads(engine, "create_segment")
    srv = make_server(engine, read_workers=2)
    with srv.client() as c:
        assert c.count('city = "Omsk"') == len(expected(lambda r: r["city"] == "Omsk"))
        c.create_segment("omsk", 'city = "Omsk"', include_count=False)
        page = c.members_page(segment="omsk", page_size=5)
        assert list(page.customer_ids) == expected(lambda r: r["city"] == "Omsk")[:5]
        assert c.sample_result(segment="omsk", size=3).total_size == 250
        assert c.health() == "SERVING"
    assert len(reads) >= 3
    assert all(name.startswith(READ_THREAD) for name in reads), reads
    assert writes and not any(name.startswith(READ_THREAD) for name in writes)


def test_no_lane_with_zero_read_workers(make_server: Callable[..., Running]) -> None:
    engine = seeded_engine()
    reads = _record_threads(engine, "segment")
    srv = make_server(engine, read_workers=0)
    with srv.client() as c:
        assert c.count("age >= 18") == 1000
    assert reads and not any(name.startswith(READ_THREAD) for name in reads)


def test_negative_read_workers_refused() -> None:
    settings = Settings(address="127.0.0.1:0", read_workers=-1)
    with pytest.raises(StartupError, match="read-workers"):
        build_app(settings, seeded_engine())


def test_many_clients_queue_on_a_one_thread_lane(
    make_server: Callable[..., Running],
) -> None:
    """16 concurrent clients on one lane thread: every answer right, none refused."""
    srv = make_server(read_workers=1)
    want = len(expected(lambda r: r["age"] >= 40))

    def counts(_k: int) -> list[int]:
        with srv.client(timeout=30.0) as c:
            return [c.count("age >= 40") for _ in range(20)]

    with ThreadPoolExecutor(16) as pool:
        results = [n for part in pool.map(counts, range(16)) for n in part]
    assert results == [want] * 320


def test_a_busy_lane_does_not_block_writes(
    make_server: Callable[..., Running],
) -> None:
    """A read stuck on the one lane thread: writes on the shared pool still go through
    (and the stuck read then finishes with the data it was asked about)."""
    engine = seeded_engine()
    release, entered = threading.Event(), threading.Event()
    original = engine.segment

    def slow_segment(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith(READ_THREAD):
            entered.set()
            assert release.wait(20)
        return original(*args, **kwargs)

    engine.segment = slow_segment
    srv = make_server(engine, read_workers=1)
    with srv.client(timeout=30.0) as reader, srv.client(timeout=10.0) as writer:
        with ThreadPoolExecutor(1) as pool:
            stuck = pool.submit(reader.count, "age >= 18")
            assert entered.wait(10)
            rows = [{"customer_id": "new1", "age": 30, "city": "Omsk"}]
            assert writer.upsert_contacts(pa.Table.from_pylist(rows)) == 1
            writer.create_segment("omsk", 'city = "Omsk"')
            assert engine.count('city = "Omsk"') == 251
            release.set()
            assert stuck.result(20) in (1000, 1001)


def test_errors_and_auth_are_unchanged_on_the_lane(
    make_server: Callable[..., Running],
) -> None:
    srv = make_server(read_workers=2)
    with srv.client() as c:
        with pytest.raises(SegdRpcError) as err:
            c.count("age >= ")
        assert err.value.code.name == "INVALID_ARGUMENT"
        with pytest.raises(SegdRpcError) as err:
            c.count(segment="no_such_segment")
        assert err.value.code.name == "NOT_FOUND"
        with pytest.raises(SegdRpcError) as err:
            c.get_segment("no_such_segment")
        assert err.value.code.name == "NOT_FOUND"
    with srv.client(token="wrong") as bad:
        with pytest.raises(SegdRpcError) as err:
            bad.count("age >= 18")
        assert err.value.code.name == "UNAUTHENTICATED"
        assert bad.health() == "SERVING"  # health stays open, on the lane too


def test_lane_methods_exist_in_the_api() -> None:
    """Every lane method is a real method: a renamed RPC would silently leave it."""
    from segd.server.app import HEALTH_SERVICE
    from segd.v1 import segments_pb2

    service = segments_pb2.DESCRIPTOR.services_by_name["SegmentService"]
    names = {f"/{service.full_name}/{m.name}" for m in service.methods}
    names.add(f"/{HEALTH_SERVICE}/Check")
    assert READ_LANE_METHODS <= names
