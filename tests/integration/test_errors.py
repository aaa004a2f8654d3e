"""The error table: every engine category maps to a specific status, never UNKNOWN."""

from __future__ import annotations

import inspect
import logging
import time

import grpc
import pytest

from segd import errors as E
from segd.server.client import SegdRpcError
from segd.server.errors import STATUS_BY_CATEGORY, status_for


def all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *all_subclasses(sub)]
    return out


SUBCLASSES = all_subclasses(E.SegdError)


def instance_of(cls: type) -> Exception:
    """Build any SegdError subclass, whatever its constructor wants."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name != "self" and p.default is inspect.Parameter.empty
              and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]  # fmt: skip
    samples = {"line": 1, "column": 7, "violations": []}
    args = [samples.get(p.name, f"boom-{p.name}") for p in params]
    return cls(*args) if args else cls(f"boom {cls.__name__}")


def test_every_category_is_in_the_table():
    assert len(SUBCLASSES) >= 10
    for cls in SUBCLASSES:
        code = status_for(instance_of(cls))
        assert code is not None, (
            f"{cls.__name__} has no status code in server/errors.py"
        )
        assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK)
    assert (
        status_for(E.SegdError("base")) is None
    )  # not a category: INTERNAL + error id


EXPECTED = {
    E.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    E.DslSyntaxError: grpc.StatusCode.INVALID_ARGUMENT,
    E.InvalidQuery: grpc.StatusCode.INVALID_ARGUMENT,
    E.SegmentNotFound: grpc.StatusCode.NOT_FOUND,
    E.ContactNotFound: grpc.StatusCode.NOT_FOUND,
    E.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    E.TooComplex: grpc.StatusCode.RESOURCE_EXHAUSTED,
    E.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    E.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    E.Conflict: grpc.StatusCode.ABORTED,
    E.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    E.StorageError: grpc.StatusCode.UNAVAILABLE,
    E.LogFailed: grpc.StatusCode.UNAVAILABLE,
    E.StorageFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    E.DataDirLocked: grpc.StatusCode.FAILED_PRECONDITION,
    E.CorruptLog: grpc.StatusCode.DATA_LOSS,
}
from segd import snapshot as _snapshot  # noqa: E402

EXPECTED[_snapshot.SnapshotError] = grpc.StatusCode.UNAVAILABLE
EXPECTED[_snapshot.CorruptSnapshot] = grpc.StatusCode.DATA_LOSS


def test_documented_codes():
    assert set(STATUS_BY_CATEGORY.values()) <= set(EXPECTED.values())
    for cls, code in EXPECTED.items():
        assert status_for(instance_of(cls)) == code


class RaisingEngine:
    """Delegates to a real engine, but ``segment`` raises what the test sets."""

    def __init__(self, inner):
        self.inner = inner
        self.exc: BaseException | None = None
        self.deadlines: list = []

    def segment(self, query, now=None, *, deadline=None):
        self.deadlines.append(deadline)
        if self.exc is not None:
            raise self.exc
        return self.inner.segment(query, now=now, deadline=deadline)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def raising(make_server):
    from tests.integration.conftest import seeded_engine

    eng = RaisingEngine(seeded_engine())
    srv = make_server(engine=eng)
    client = srv.client(retries=0)
    yield eng, client
    client.close()


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_each_category_reaches_the_client_with_its_code(raising, cls):
    eng, client = raising
    eng.exc = instance_of(cls)
    with pytest.raises(SegdRpcError) as e:
        client.count("age > 1")
    assert e.value.code == status_for(eng.exc)
    assert e.value.message == (str(eng.exc) or cls.__name__)
    # The same through a server-streaming call (Export) and the unary Members.
    with pytest.raises(SegdRpcError) as e:
        list(client.export("age > 1"))
    assert e.value.code == status_for(eng.exc)


def test_unexpected_exception_is_internal_with_error_id(raising, caplog):
    eng, client = raising
    eng.exc = ZeroDivisionError("kaboom")
    with caplog.at_level(logging.ERROR, logger="segd.server"):
        with pytest.raises(SegdRpcError) as e:
            client.count("age > 1")
    err = e.value
    assert err.code == grpc.StatusCode.INTERNAL
    assert err.error_id and err.error_id in err.message
    assert "kaboom" not in err.message  # internals stay in the log
    logged = [
        r
        for r in caplog.records
        if getattr(r, "fields", {}).get("error_id") == err.error_id
    ]
    assert len(logged) == 1 and logged[0].exc_info


def test_deadline_is_passed_to_the_engine(raising):
    eng, client = raising
    start = time.monotonic()
    client.count("age > 1", timeout=5.0)
    deadline = eng.deadlines[-1]
    assert deadline is not None and start + 3.0 < deadline < start + 5.5
    client.count("age > 1", timeout=None)
    assert eng.deadlines[-1] is None


def test_engine_deadline_exceeded_and_client_timeout(raising):
    eng, client = raising
    eng.exc = E.DeadlineExceeded("deadline passed after 2 of 5 plan steps")
    with pytest.raises(SegdRpcError) as e:
        client.count("age > 1")
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED

    class Slow(Exception):
        pass

    eng.exc = None
    inner_segment = eng.segment

    def slow(query, now=None, *, deadline=None):
        time.sleep(0.5)
        return inner_segment(query, now=now, deadline=deadline)

    eng.segment = slow
    with pytest.raises(SegdRpcError) as e:
        client.count("age > 1", timeout=0.1)
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
