"""Fused pair programs (``pairscan.PairProgram`` built by
``segments.pairs.conjunction_program``) against the definition: for random segments
over random data, the program's answer for every contact at one moment is membership in
``Engine.segment(query, now=moment)``, and equals the per-node walk
(``evaluate_conjunction(..., fused=False)``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings

from segd.errors import InvalidQuery
from segd.segments.pairs import conjunction_program, evaluate_conjunction
from tests.property.test_live_state_machine import BASE, CONTACTS, offsets, queries
from tests.property.test_pairs import _engine, event_rows, profiles


def _top_parts(plan):
    node = plan
    while type(node).__name__ == "RefNode":
        node = node.inner
    if type(node).__name__ == "AndNode":
        return list(node.parts)
    return [plan]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=event_rows,
    people=profiles,
    base_query=queries,
    query=queries,
    offset=offsets,
)
def test_program_equals_fresh_evaluation(rows, people, base_query, query, offset):
    e = _engine(rows, people, base_query)
    now = float(BASE + offset)
    try:
        members = set(e.segment(query, now=now).ids())
    except InvalidQuery:
        return
    cids = np.asarray(e.store.contacts.lookup(pa.array(CONTACTS)), np.uint32)
    expected = [c in members for c in CONTACTS]
    parts = _top_parts(e._compiler(now).compile(query))
    walked = evaluate_conjunction(
        parts, e.store, cids, np.full(len(cids), now), fused=False
    )
    assert walked.tolist() == expected
    fused = evaluate_conjunction(parts, e.store, cids, np.full(len(cids), now))
    assert fused.tolist() == expected
    program = conjunction_program(parts, e.store, now)
    if program is not None:
        assert program.run(cids).view(bool).tolist() == expected
