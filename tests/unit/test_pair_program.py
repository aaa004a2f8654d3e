"""``pairscan.PairProgram`` (fused live-segment programs) against plain-Python oracles:
random expression trees of gather leaves (intervals over int8 / int64 / uint32 /
float64 columns with validity, ratios, code masks, constants) under AND / OR / NOT, and
event leaves against the event kernel's own oracle (tests/unit/test_pairs_kernels.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd.native import NO_CODE, pairscan
from tests.unit.test_pairs_kernels import _oracle, cases

N = 8  # contacts
DTYPES = [np.int8, np.int64, np.uint32, np.float64]
INTERVALS = st.lists(
    st.tuples(st.sampled_from([-5.0, 0.0, 1.0, 3.0]), st.sampled_from([0.0, 2.0, 9.0])),
    max_size=3,
)


@st.composite
def leaves(draw):
    """(kind, arguments, oracle: cid -> bool)."""
    kind = draw(st.sampled_from(["interval", "ratio", "codes", "const"]))
    negate = draw(st.booleans())
    if kind == "interval":
        dtype = draw(st.sampled_from(DTYPES))
        values = np.array(draw(st.lists(st.integers(-3, 9), min_size=N, max_size=N)))
        values = values.astype(dtype)
        valid = None
        if draw(st.booleans()):
            valid = np.array(
                draw(st.lists(st.integers(0, 1), min_size=N, max_size=N)), np.uint8
            )
        iv = draw(INTERVALS)
        lo, hi = [a for a, _ in iv], [b for _, b in iv]

        def holds(c, values=values, valid=valid, iv=iv):
            if valid is not None and not valid[c]:
                return False
            return any(a <= float(values[c]) <= b for a, b in iv)

        return kind, (values, lo, hi, valid, negate), lambda c: holds(c) != negate
    if kind == "ratio":
        num = np.array(
            draw(
                st.lists(
                    st.sampled_from([0.0, 1.0, 5.0, np.nan]), min_size=N, max_size=N
                )
            )
        )
        den = np.array(
            draw(st.lists(st.integers(0, 3), min_size=N, max_size=N)), np.uint32
        )
        iv = draw(INTERVALS)
        lo, hi = [a for a, _ in iv], [b for _, b in iv]

        def ratio(c, num=num, den=den, iv=iv):
            return bool(den[c]) and any(a <= num[c] / den[c] <= b for a, b in iv)

        return kind, (num, den, lo, hi, negate), lambda c: ratio(c) != negate
    if kind == "codes":
        codes = np.array(
            draw(
                st.lists(st.sampled_from([0, 1, 2, 5, NO_CODE]), min_size=N, max_size=N)
            ),
            np.uint32,
        )
        mask = np.array(draw(st.lists(st.integers(0, 1), max_size=4)), np.uint8)

        def coded(c, codes=codes, mask=mask):
            k = int(codes[c])
            return k != NO_CODE and k < len(mask) and bool(mask[k])

        return kind, (codes, mask, negate), lambda c: coded(c) != negate
    return kind, (negate,), lambda c: negate


def trees(leaf_count: int):
    """(ops, args, oracle over leaf answers) in prefix order."""
    leaf = st.integers(0, leaf_count - 1).map(
        lambda i: ([pairscan.LEAF], [i], lambda got, i=i: got[i])
    )

    def extend(inner):
        def combine(op, kids):
            ops, args = [op], [len(kids)]
            for k_ops, k_args, _ in kids:
                ops += k_ops
                args += k_args
            fns = [f for _, _, f in kids]
            if op == pairscan.AND:
                return ops, args, lambda got: all(f(got) for f in fns)
            return ops, args, lambda got: any(f(got) for f in fns)

        def negate(kid):
            ops, args, f = kid
            return [pairscan.NOT, *ops], [0, *args], lambda got: not f(got)

        return st.one_of(
            st.builds(
                combine,
                st.sampled_from([pairscan.AND, pairscan.OR]),
                st.lists(inner, max_size=3),
            ),
            inner.map(negate),
        )

    return st.recursive(leaf, extend, max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_gather_trees_match_the_oracle(data) -> None:
    specs = data.draw(st.lists(leaves(), min_size=1, max_size=5))
    program = pairscan.PairProgram()
    for kind, args, _ in specs:
        add = {
            "interval": program.add_interval,
            "ratio": program.add_ratio,
            "codes": program.add_codes,
            "const": program.add_const,
        }[kind]
        add(*args)
    ops, args, tree = data.draw(trees(len(specs)))
    program.set_tree(ops, args)
    cids = np.array(data.draw(st.lists(st.integers(0, N - 1), max_size=12)), np.uint32)
    expected = [tree([f(int(c)) for _, _, f in specs]) for c in cids]
    assert program.run(cids).view(bool).tolist() == expected


@settings(max_examples=150, deadline=None)
@given(case=cases(), zero=st.booleans(), negated=st.booleans())
def test_event_leaves_match_the_kernel_oracle(case, zero, negated) -> None:
    src = pairscan.PairSource(
        case["log"],
        code_filters=[(case["codes"], case["mask"])] if case["use_codes"] else [],
        amount=case["amount"],
        amount_intervals=case["intervals"],
    )
    then, within = None, 0
    if case["then"] is not None:
        _, _, t_codes, t_log, t_mask, within = case["then"]
        then = pairscan.PairSource(t_log, code_filters=[(t_codes, t_mask)])
    verdicts = _oracle(case)
    for c, lo, hi, verdict in zip(
        case["pc"], case["lo"], case["hi"], verdicts, strict=True
    ):
        program = pairscan.PairProgram()
        leaf = program.add_event(
            src,
            int(lo),
            int(hi),
            case["count_min"],
            case["count_max"],
            sum_range=case["sum_range"],
            distinct_codes=case["codes"] if case["distinct"] else None,
            then=then,
            within_s=within,
            zero_qualifies=zero,
        )
        if negated:
            program.set_tree([pairscan.NOT, pairscan.LEAF], [0, leaf])
        else:
            program.set_tree([pairscan.LEAF], [leaf])
        holds = verdict == pairscan.QUALIFIES or (
            zero and verdict == pairscan.NO_EVENTS
        )
        got = program.run(np.array([c], np.uint32)).view(bool).tolist()
        assert got == [holds != negated]


def _source(cid, ts) -> pairscan.PairSource:
    from segd.native import contactindex

    cid = np.asarray(cid, np.uint32)
    ts = np.asarray(ts, np.uint32)
    slots, rows = contactindex.build(cid, 4)
    tail_cids, tail_rows = pairscan.tail_index(cid, len(cid), len(cid))
    log = pairscan.PairLog(cid, ts, slots, rows, len(cid), tail_cids, tail_rows)
    return pairscan.PairSource(log)


def test_relink_points_an_event_leaf_at_a_grown_log() -> None:
    program = pairscan.PairProgram()
    leaf = program.add_event(_source([0, 1], [5, 6]), 0, 10, 2)  # count >= 2
    program.set_tree([pairscan.LEAF], [leaf])
    cids = np.array([0, 1, 2], np.uint32)
    assert program.run(cids).tolist() == [0, 0, 0]
    program.relink_event(leaf, _source([0, 1, 0, 2], [5, 6, 7, 8]))
    assert program.run(cids).tolist() == [1, 0, 0]


def test_bad_programs_are_refused() -> None:
    program = pairscan.PairProgram()
    with pytest.raises(ValueError, match="no tree"):
        program.run(np.zeros(1, np.uint32))
    leaf = program.add_interval(np.zeros(3), [0.0], [1.0])
    for ops, args in (
        ([pairscan.AND], [2]),  # operands missing
        ([pairscan.LEAF], [5]),  # no such leaf
        ([pairscan.LEAF, pairscan.LEAF], [0, 0]),  # two trees
        ([9], [0]),  # no such operation
        ([pairscan.LEAF], []),  # lengths differ
    ):
        with pytest.raises(ValueError):
            program.set_tree(ops, args)
    program.set_tree([pairscan.LEAF], [leaf])
    with pytest.raises(ValueError, match="beyond"):
        program.run(np.array([3], np.uint32))
    with pytest.raises(ValueError, match="not an event leaf"):
        program.relink_event(leaf, _source([0], [1]))
    with pytest.raises(TypeError):
        program.add_interval(np.zeros(3, np.float32), [0.0], [1.0])
