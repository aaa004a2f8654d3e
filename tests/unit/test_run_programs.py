"""``pairscan.run_programs`` (the programs of one live flush in one pass, contact by
contact, with a per-contact memo of keyed event leaves) against its oracle: each
program's own ``PairProgram.run`` over the contacts it is asked about."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd.native import pairscan
from tests.unit.test_pair_program import N, leaves, trees


def _log_source(cid, ts, *, codes=None, mask=None) -> pairscan.PairSource:
    from segd.native import contactindex

    cid = np.asarray(cid, np.uint32)
    ts = np.asarray(ts, np.uint32)
    # index the first half, leave the rest as the unindexed tail
    limit = len(cid) // 2
    slots, rows = contactindex.build(cid[:limit], N)
    tail_cids, tail_rows = pairscan.tail_index(cid, limit, len(cid))
    log = pairscan.PairLog(cid, ts, slots, rows, limit, tail_cids, tail_rows)
    filters = [] if codes is None else [(codes, mask)]
    return pairscan.PairSource(log, code_filters=filters)


@st.composite
def event_logs(draw):
    """Two logs over N contacts (times non-decreasing), one with a code filter."""
    out = []
    for filtered in (False, True):
        n = draw(st.integers(0, 24))
        cid = draw(st.lists(st.integers(0, N - 1), min_size=n, max_size=n))
        ts = sorted(draw(st.lists(st.integers(1, 40), min_size=n, max_size=n)))
        if filtered:
            codes = np.array(
                draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.uint32
            )
            mask = np.array([1, 0, 1, 0], np.uint8)
            out.append(_log_source(cid, ts, codes=codes, mask=mask))
        else:
            out.append(_log_source(cid, ts))
    return out


# an event leaf: (source 0 / 1, window, count_min, count_max, zero_qualifies)
EVENT_LEAVES = st.tuples(
    st.integers(0, 1),
    st.sampled_from([(0, 50), (10, 30), (25, 41), (5, 5)]),
    st.integers(0, 3),
    st.sampled_from([2, 2**64 - 1]),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), sources=event_logs())
def test_one_pass_equals_each_program_alone(data, sources) -> None:
    """Programs mixing gather and event leaves; event leaves of equal (source, window,
    counts) share a memo key, as ``segments.pairs.run_fused`` assigns them."""
    n_programs = data.draw(st.integers(0, 5))
    programs = []
    for _ in range(n_programs):
        program = pairscan.PairProgram()
        gathers = data.draw(st.lists(leaves(), max_size=3))
        for kind, args, _ in gathers:
            add = {
                "interval": program.add_interval,
                "ratio": program.add_ratio,
                "codes": program.add_codes,
                "const": program.add_const,
            }[kind]
            add(*args)
        events = data.draw(st.lists(EVENT_LEAVES, max_size=4))
        for spec in events:
            which, (lo, hi), cmin, cmax, zero = spec
            keyed = data.draw(st.booleans())
            leaf = program.add_event(
                sources[which], lo, hi, cmin, cmax, zero_qualifies=zero
            )
            assert leaf == program.n_leaves - 1
            # the same spec always gets the same key (or none)
            if keyed:
                program.set_memo_key(leaf, _KEYS.setdefault(spec, len(_KEYS)))
        if program.n_leaves == 0:
            program.add_const(True)
        ops, args, _ = data.draw(trees(program.n_leaves))
        program.set_tree(ops, args)
        programs.append(program)
    cids = np.array(data.draw(st.lists(st.integers(0, N - 1), max_size=10)), np.uint32)
    todo = np.array(
        data.draw(
            st.lists(
                st.lists(st.booleans(), min_size=n_programs, max_size=n_programs),
                min_size=len(cids),
                max_size=len(cids),
            )
        ),
        np.uint8,
    ).reshape(len(cids), n_programs)
    got = pairscan.run_programs(programs, cids, todo)
    assert got.shape == (n_programs, len(cids))
    plain = pairscan.run_programs(programs, cids, todo, prefetch=False)
    assert plain.tolist() == got.tolist()  # prefetching changes no answer
    for s, program in enumerate(programs):
        alone = program.run(cids) if len(cids) else np.zeros(0, np.uint8)
        expected = np.where(todo[:, s].astype(bool), alone, 0)
        assert got[s].tolist() == expected.tolist()


_KEYS: dict = {}


def test_a_memo_key_is_decided_once_per_contact() -> None:
    """Two leaves under one key: the second takes the first's answer for the same
    contact (the caller's contract is to key only leaves that agree), not for
    another contact."""
    src = _log_source([0, 0, 1], [5, 6, 30])
    first = pairscan.PairProgram()
    first.add_event(src, 0, 10, memo_key=0)  # contact 0: yes, contact 1: no
    first.set_tree([pairscan.LEAF], [0])
    second = pairscan.PairProgram()
    second.add_event(src, 20, 40, memo_key=0)  # contact 0: no, contact 1: yes
    second.set_tree([pairscan.NOT, pairscan.LEAF], [0, 0])
    cids = np.array([0, 1], np.uint32)
    both = np.ones((2, 2), np.uint8)
    # keyed: contact 0 -> (yes, not yes), contact 1 -> (no, not no)
    assert pairscan.run_programs([first, second], cids, both).tolist() == [
        [1, 0],
        [0, 1],
    ]
    second.set_memo_key(0, -1)  # unkeyed: its own window
    assert pairscan.run_programs([first, second], cids, both).tolist() == [
        [1, 0],
        [1, 0],
    ]


def test_bad_calls_are_refused() -> None:
    program = pairscan.PairProgram()
    leaf = program.add_interval(np.zeros(3), [0.0], [1.0])
    with pytest.raises(ValueError, match="no tree"):
        pairscan.run_programs(
            [program], np.zeros(1, np.uint32), np.ones((1, 1), np.uint8)
        )
    program.set_tree([pairscan.LEAF], [leaf])
    with pytest.raises(ValueError, match="todo must be"):
        pairscan.run_programs(
            [program], np.zeros(2, np.uint32), np.ones((1, 1), np.uint8)
        )
    with pytest.raises(ValueError, match="beyond"):
        pairscan.run_programs(
            [program], np.array([1, 3], np.uint32), np.ones((2, 1), np.uint8)
        )
    # a cid beyond the columns is fine when that program is not asked about it
    out = pairscan.run_programs(
        [program], np.array([1, 3], np.uint32), np.array([[1], [0]], np.uint8)
    )
    assert out.tolist() == [[1, 0]]
    with pytest.raises(TypeError):
        pairscan.run_programs(
            ["no program"], np.zeros(0, np.uint32), np.zeros((0, 1), np.uint8)
        )
    with pytest.raises(ValueError, match="not an event leaf"):
        program.set_memo_key(leaf, 0)
    with pytest.raises(ValueError):
        program.add_event(_log_source([0], [1]), 0, 5, memo_key=-2)


@settings(max_examples=200, deadline=None)
@given(
    cid=st.lists(st.integers(0, 6), max_size=40),
    cuts=st.lists(st.integers(0, 40), min_size=2, max_size=5),
)
def test_a_grown_tail_index_equals_a_fresh_one(cid, cuts) -> None:
    """``segments.pairs.grown_tail_index``: the tail index grown append by append
    equals ``pairscan.tail_index`` sorted afresh."""
    from segd.segments.pairs import grown_tail_index

    col = np.array(cid, np.uint32)
    marks = sorted(min(c, len(col)) for c in cuts)
    limit = marks[0]
    tail_cids, tail_rows = pairscan.tail_index(col, limit, marks[1])
    n0 = marks[1]
    for n1 in marks[2:]:
        tail_cids, tail_rows = grown_tail_index(tail_cids, tail_rows, col, n0, n1)
        n0 = n1
    want_cids, want_rows = pairscan.tail_index(col, limit, n0)
    assert tail_cids.dtype == np.uint32 and tail_rows.dtype == np.uint32
    assert tail_cids.tolist() == want_cids.tolist()
    assert tail_rows.tolist() == want_rows.tolist()
