"""The one-pass flush (``segd.live.ONE_PASS``: the fused programs of a flush's
segments decided by one ``pairscan.run_programs`` call, with a memo of shared event
leaves) against the segment-by-segment flush it replaced: the live state machine's
random segments and operations applied to two engines, one per path, give the same
change log, row for row and in the same order (and each stays exact, as checked by
``test_live_state_machine``)."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from segd import Engine, live
from segd.errors import InvalidQuery
from tests.property.strategies import asts
from tests.property.test_live_state_machine import TYPES, LiveMachine

# Operands every fused program takes (numbers, events with filters, aggregates): the
# segments of a family are queued together rather than decided in turn.
fusable = asts(
    attrs={"score": "int", "age": "int"},
    values={"score": [1, 3, 5], "age": [18, 30, 45], "amount": [100.0, 500.0]},
    event_types=TYPES,
    filter_fields={"amount": "float"},
    include_rfm=False,
    include_segments=False,
    max_depth=2,
)


class _Twin:
    """Calls go to both engines (the second with ``ONE_PASS`` off); the first's
    answer is returned, and both must fail alike."""

    def __init__(self) -> None:
        self.one = Engine(result_cache_size=0)
        self.each = Engine(result_cache_size=0)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("one", "each"):
            object.__setattr__(self, name, value)
        else:  # a setting (live_refs): both engines
            setattr(self.one, name, value)
            setattr(self.each, name, value)

    def __getattr__(self, name: str) -> Any:
        first = getattr(self.one, name)
        if not callable(first):
            return first
        second = getattr(self.each, name)

        def both(*args: Any, **kwargs: Any) -> Any:
            failed: Exception | None = None
            got = None
            try:
                got = first(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - compared with the other's
                failed = error
            live.ONE_PASS = False
            try:
                second(*args, **kwargs)
            except Exception as error:  # noqa: BLE001
                assert type(error) is type(failed), (name, error, failed)
            else:
                assert failed is None, (name, failed)
            finally:
                live.ONE_PASS = True
            if failed is not None:
                raise failed
            return got

        return both


_BLOCK = live.ONE_PASS_BLOCK


class TwinMachine(LiveMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = _Twin()  # type: ignore[assignment]
        live.ONE_PASS_BLOCK = 3  # passes run in several blocks of contacts

    def teardown(self) -> None:
        live.ONE_PASS = True
        live.ONE_PASS_BLOCK = _BLOCK

    @rule(
        shared=fusable,
        others=st.lists(fusable, min_size=2, max_size=4),
        score=st.integers(0, 5),
    )
    def create_family(self, shared: dict, others: list, score: int) -> None:
        """Segments sharing an operand behind one attribute conjunct: one flush
        queues them together and their event leaves share memo keys."""
        for other in others:
            name = f"s{len(self.queries)}"
            query = {
                "and": [{"attr": "score", "op": ">=", "value": score}, shared, other]
            }
            try:
                self.engine.create_segment(name, query)
            except InvalidQuery:
                continue
            self.queries[name] = query

    @invariant()
    def same_changes(self) -> None:
        twin = self.engine
        assert isinstance(twin, _Twin)
        one = twin.one.segment_changes().to_pylist()
        each = twin.each.segment_changes().to_pylist()
        assert one == each


TestOnePass = TwinMachine.TestCase
# 40 examples locally; 25 under CI=true (25 x 20 = 500 steps, each one a twin of two
# engines compared): at 40 this one test was the longest of the CI run.
CI = os.environ.get("CI", "").lower() == "true"
TestOnePass.settings = settings(
    max_examples=25 if CI else 40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
