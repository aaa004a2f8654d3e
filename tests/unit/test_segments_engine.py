"""Engine.segment / explain / profile / saved segments on a dozen hand-written contacts.

Every expected member set below is written out literally from the data in ``DATA``; the
comments next to the events say which conditions each one is there to pin (NULL
semantics, half-open periods, did-not-happen, then-no boundaries, distinct orders).
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

import pytest

from segd import Engine
from segd.errors import (
    AlreadyExists,
    Conflict,
    ContactNotFound,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidQuery,
    SegmentNotFound,
)
from segd.explain import (
    COUNT_MEANING,
    AggregateEvidence,
    AttributeEvidence,
    EventEvidence,
    Explanation,
    Profile,
    ProfileStep,
    SegmentEvidence,
)

NOW = int(datetime(2025, 6, 15, 12, 0, tzinfo=UTC).timestamp())
D = 86_400
EVERYONE = set("abcdefghijkl")


def iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


CONTACTS = [
    # a: 35 today (birthday today); b: 34 (birthday tomorrow); c: born Feb 29;
    # d: no birth date; f: 18 today. NULLs: gender c, rating b, city c, tags c and f.
    dict(customer_id="a", gender="m", birth_date=date(1990, 6, 15), city="Kazan",
         rating=5, tags=["vip", "new"], email_subscribed=True),
    dict(customer_id="b", gender="f", birth_date=date(1990, 6, 16), city="Moscow",
         rating=None, tags=["new"], email_subscribed=False),
    dict(customer_id="c", gender=None, birth_date=date(2000, 2, 29), city=None,
         rating=1, tags=None, email_subscribed=True),
    dict(customer_id="d", gender="m", birth_date=None, city="Kazan",
         rating=10, tags=[], email_subscribed=None),
    dict(customer_id="e", gender="f", birth_date=date(1985, 1, 1), city="Omsk",
         rating=5, tags=["vip"], email_subscribed=False),
    dict(customer_id="f", gender="m", birth_date=date(2007, 6, 15), city="Moscow",
         rating=7, tags=None, email_subscribed=True),
]  # fmt: skip

ITEMS = [
    dict(item_id="i1", category="Pets/Cats/Dry food", brand="Acme", price=10.0),
    dict(item_id="i2", category="Pets/Dogs", brand="Acme", price=20.0),
    dict(item_id="i3", category="Outdoor/Tents", brand="Zed", price=300.0),
    dict(item_id="i4", category="Petshop", brand="Zed", price=5.0),  # not under Pets
]


def e(cid, t, etype, item=None, amount=None, order_id=None) -> dict:
    return dict(customer_id=cid, ts=t, type=etype, item_id=item, amount=amount,
                order_id=order_id)  # fmt: skip


EVENTS = [
    e("a", NOW - 1 * D, "view", "i1"),
    e("a", NOW - 2 * D, "view", "i1"),
    e("a", NOW - 40 * D, "view", "i3"),
    e("a", NOW - 10 * D, "order", "i1", 100.0, "o1"),  # o1 has two lines: one order
    e("a", NOW - 10 * D, "order", "i2", 50.0, "o1"),
    e("a", NOW - 3 * D, "add_to_cart", "i1"),
    e("a", NOW - 2 * D, "order", "i1", 20.0, "o3"),  # follows a's cart within 7 days
    e("b", NOW - 5 * D, "view", "i2"),
    e("b", NOW - 5 * D + 60, "view", "i2"),
    e("b", NOW - 5 * D + 120, "view", "i2"),
    e("b", NOW - 3 * D, "add_to_cart", "i3"),  # never ordered: abandoned
    e("c", NOW - 20 * D, "order", "i3", 30.0),  # two lines without order_id: 2 orders
    e("c", NOW - 20 * D, "order", "i3", 40.0),
    e("c", NOW - 1 * D, "email_open"),
    e("d", NOW - 400 * D, "order", "i3", 1000.0, "o2"),
    e("e", NOW - 1 * D, "view", "i4"),
    e("g", NOW - 10 * D, "add_to_cart", "i1"),
    e("g", NOW - 3 * D, "order", "i1"),  # exactly t_A + 7d: not "within 7 days"
    e("h", NOW - 10 * D, "add_to_cart", "i1"),
    e("h", NOW - 3 * D - 1, "order", "i1"),  # t_A + 7d - 1s: within
    e("i", NOW - 30 * D, "view", "i1"),  # exactly the `from` bound of a period
    e("j", NOW, "view", "i1"),  # exactly now: outside "in last 7 days"
    e("k", NOW - 7 * D, "view", "i1"),  # exactly now - 7d: inside "in last 7 days"
    e("l", NOW - 7 * D - 1, "view", "i2"),  # one second before
]
# A later batch repeats order o2 (another line of it): still one order for d.
LATE = [e("d", NOW - 399 * D, "order", "i3", 10.0, "o2")]


def build() -> Engine:
    eng = Engine()
    eng.load_contacts(CONTACTS)
    eng.load_items(ITEMS)
    eng.load_events(EVENTS)
    eng.append_events(LATE)
    return eng


@pytest.fixture(scope="module")
def eng() -> Engine:
    """Read-only shared dataset (tests that mutate build their own)."""
    return build()


def members(eng: Engine, q, now=NOW) -> set[str]:
    return set(eng.segment(q, now).ids())


# -- attributes --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("q", "want"),
    [
        ('gender = "m"', "adf"),
        ('gender != "m"', "be"),  # NULL is not "not m"
        ('not (gender = "m")', "bceghijkl"),  # the complement includes NULL
        ('not gender != "m"', "acdfghijkl"),
        ("gender is null", "cghijkl"),
        ("gender is not null", "abdef"),
        ('gender in ("m", "f")', "abdef"),
        ('gender not in ("m")', "be"),
        ('gender = "x"', ""),
        ("rating = 5", "ae"),
        ("rating != 5", "cdf"),
        ("rating < 5", "c"),
        ("rating <= 5", "ace"),
        ("rating > 5", "df"),
        ("rating >= 5", "adef"),
        ("rating between 1 and 5", "ace"),
        ("rating in (1, 10)", "cd"),
        ("rating not in (5)", "cdf"),
        ("rating is null", "bghijkl"),
        ("not (rating > 5)", "abceghijkl"),
        ('city prefix "Mo"', "bf"),
        ('city contains "za"', "ad"),
        ('city != "Kazan"', "bef"),
        ('tags contains_any ("vip")', "ae"),
        ('tags contains_all ("vip", "new")', "a"),
        ('tags contains_any ("nope")', ""),
        ("tags is null", "cfghijkl"),  # d has an empty list, which is not NULL
        ("email_subscribed = true", "acf"),
        ("email_subscribed = false", "be"),
        ("birth_date < 1990-06-16", "ae"),
        ("birth_date >= 2000-02-29", "cf"),
    ],
)
def test_attribute_ops(eng: Engine, q: str, want: str) -> None:
    assert members(eng, q) == set(want)


@pytest.mark.parametrize(
    ("q", "want"),
    [
        ("age >= 35", "ae"),  # a turns 35 today
        ("age = 34", "b"),  # b turns 35 tomorrow
        ("age = 25", "c"),
        ("age = 18", "f"),  # f turns 18 today
        ("age < 18", ""),
        ("age between 18 and 25", "cf"),
        ("age != 35", "bcef"),
        ("age is null", "dghijkl"),
        ("not (age >= 30)", "cdfghijkl"),
    ],
)
def test_age_derived_from_birth_date(eng: Engine, q: str, want: str) -> None:
    assert members(eng, q) == set(want)


@pytest.mark.parametrize(
    ("now", "age_of_c"),
    [
        (datetime(2024, 2, 28, 12, tzinfo=UTC), 23),
        (datetime(2024, 2, 29, 0, tzinfo=UTC), 24),  # a leap-year birthday
        (datetime(2025, 2, 28, 23, 59, 59, tzinfo=UTC), 24),  # not yet in 2025
        (datetime(2025, 3, 1, 0, tzinfo=UTC), 25),  # turns over on Mar 1
    ],
)
def test_age_feb_29(eng: Engine, now: datetime, age_of_c: int) -> None:
    assert "c" in members(eng, f"age = {age_of_c}", now)
    assert "c" not in members(eng, f"age = {age_of_c + 1}", now)
    assert "c" not in members(eng, f"age = {age_of_c - 1}", now)
    evidence = eng.explain(f"age = {age_of_c}", "c", now).root.evidence
    assert evidence == AttributeEvidence("age", age_of_c, derived_from="birth_date")


def test_age_at_the_birthday_second(eng: Engine) -> None:
    before = datetime(2025, 6, 14, 23, 59, 59, tzinfo=UTC)
    at = datetime(2025, 6, 15, 0, 0, 0, tzinfo=UTC)
    assert members(eng, "age = 34", before) == {"a", "b"}
    assert members(eng, "age = 34", at) == {"b"}
    assert members(eng, "age = 35", at) == {"a"}


# -- events ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("q", "want"),
    [
        ("view()", "abeijkl"),
        ('view(category = "Pets")', "abijkl"),  # i4 "Petshop" is not under "Pets"
        ('view(category = "Pets/Cats")', "aijk"),
        ('view(category != "Pets")', "ae"),
        ('view(category in ("Pets/Dogs", "Petshop"))', "bel"),
        ('view(brand = "Acme", price < 15)', "aijk"),
        ('view(item = "i3")', "a"),
        ('view(item = "nope")', ""),
        ("view() count 2..5", "ab"),
        ("view() count 3..3", "ab"),
        ("view() count >= 4", ""),
        ('view(category = "Pets") count 2..5', "ab"),
        ('view(category = "Pets") count = 1', "ijkl"),
        ("view() count = 0", "cdfgh"),  # incl. f, who has no events at all
        ("not view()", "cdfgh"),
        ("view() count 0..1", "cdefghijkl"),
        ('view(category = "Pets") count = 0', "cdefgh"),
        ("email_click() count = 0", EVERYONE),  # a type nobody has
        ("email_click()", ""),
        ("view() in last 7 days", "abek"),  # k at now-7d in; j at now out; l out
        ("view() in last 168 hours", "abek"),
        ("view() from 30 to 7 days ago", "il"),  # i at the from bound; k at the to
        (f"view() between {iso(NOW - 30 * D)} and {iso(NOW - 7 * D)}", "il"),
        (f"view() from {iso(NOW)}", "j"),
        (f"view() before {iso(NOW - 30 * D)}", "a"),
        (f"view() before {iso(NOW - 30 * D + 1)}", "ai"),
        ("order() sum(amount) >= 100", "ad"),
        ("order() sum(amount) between 50 and 200", "ac"),
        ("order() in last 30 days sum(amount) <= 100", "cgh"),  # NULL amounts sum to 0
        ("order() count 0..5 sum(amount) = 0", "befghijkl"),
        ("order() count 2..2", "ac"),  # orders: a has o1 (two lines) and o3; d one
        ("add_to_cart() then no order within 7 days", "bg"),
        ("add_to_cart() in last 7 days then no order within 7 days", "b"),
        ("add_to_cart() then no order within 6 days", "bgh"),
        ('add_to_cart() then no order(brand = "Zed") within 30 days', "abgh"),
        ("email_open() in last 1 days", "c"),
    ],
)
def test_event_conditions(eng: Engine, q: str, want) -> None:
    assert members(eng, q) == set(want)


# -- aggregates ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("q", "want"),
    [
        ("orders_count >= 2", "ac"),  # a: o1 (two lines) + o3; c: two lines without id
        ("orders_count = 1", "dgh"),  # d: o2 seen in two batches counts once
        ("orders_count = 0", "befijkl"),
        ("revenue > 100", "ad"),
        ("revenue = 1010", "d"),  # both lines of o2 add revenue
        ("revenue = 0", "befghijkl"),
        ("avg_order_value between 30 and 100", "ac"),  # 170/2 and 70/2
        ("avg_order_value is null", "befijkl"),
        ("days_since_last_order <= 3", "agh"),
        ("days_since_last_order = 399", "d"),
        ("days_since_last_order is null", "befijkl"),
        ("days_since_last_visit = 0", "j"),
        ("days_since_last_visit <= 1", "aej"),  # c: an email open is no visit
        ("days_since_last_visit = 20", "c"),  # its orders are
        ("days_since_last_visit = 7", "kl"),
        ("days_since_last_visit is null", "f"),
        ("days_since_last_email_open = 1", "c"),
        ("orders_count >= 2 in last 30 days", "ac"),
        ("orders_count = 0 in last 30 days", "bdefijkl"),
        ("orders_count >= 1 in last 500 days", "acdgh"),
        ("revenue >= 20 in last 5 days", "a"),
        ("revenue = 1010 in last 500 days", "d"),
        ("avg_order_value is null in last 30 days", "bdefijkl"),
        ("days_since_last_order <= 3 in last 30 days", "agh"),
        ("days_since_last_visit >= 30 in last 60 days", "i"),
    ],
)
def test_aggregates(eng: Engine, q: str, want: str) -> None:
    assert members(eng, q) == set(want)


def test_all_time_period_equals_plain_aggregate(eng: Engine) -> None:
    for name, op, v in [("orders_count", ">=", 1), ("revenue", ">", 60)]:
        plain = {"aggregate": name, "op": op, "value": v}
        period = {**plain, "period": {"from": "1970-01-02"}}
        assert members(eng, plain) == members(eng, period)


def test_same_order_id_on_two_contacts() -> None:
    eng = Engine()
    eng.append_events(
        [
            e("x", NOW - D, "order", "i1", 5.0, "o1"),
            e("y", NOW - D, "order", "i1", 5.0, "o1"),
        ]
    )
    period = {"aggregate": "orders_count", "op": "=", "value": 1,
              "period": {"from": "2000-01-01"}}  # fmt: skip
    assert members(eng, period) == {"x", "y"}
    assert members(eng, "orders_count = 1") == members(eng, period)


# -- unknown names --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("q", "where", "hint"),
    [
        ('gendr = "m"', "$.attr", "did you mean 'gender'"),
        ("ratin > 1", "$.attr", "did you mean 'rating'"),
        ("veiw()", "$.event", "did you mean 'view'"),
        ("add_to_cart() then no ordr within 7 days", "$.then_no.event", "'order'"),
        ('view(categroy = "Pets")', "$.where[0].field", "did you mean 'category'"),
        ('view(brnd = "Acme")', "$.where[0].field", "did you mean 'brand'"),
        ('rating = 1 and (gender = "m" or cty = "x")', "$.and[1].or[1].attr", "'city'"),
    ],
)
def test_unknown_names_get_a_hint(eng: Engine, q: str, where: str, hint: str) -> None:
    with pytest.raises(InvalidQuery) as info:
        eng.segment(q, NOW)
    assert info.value.violations[0].where == where
    assert hint in str(info.value)


def test_age_without_birth_date_column() -> None:
    eng = Engine()
    eng.load_contacts([{"customer_id": "x", "rating": 1}])
    with pytest.raises(InvalidQuery, match="unknown attribute 'age'"):
        eng.segment("age > 3", NOW)


def test_age_hint_does_not_suggest_itself() -> None:
    eng = Engine()
    eng.load_contacts([{"customer_id": "x", "rating": 1}])
    with pytest.raises(InvalidQuery) as info:
        eng.segment("age > 3", NOW)
    assert "did you mean 'age'" not in str(info.value)


def test_bad_operator_for_type(eng: Engine) -> None:
    with pytest.raises(InvalidQuery, match="does not apply"):
        eng.segment('city > "A"', NOW)
    with pytest.raises(InvalidQuery, match="expected a number"):
        eng.segment('rating = "five"', NOW)


# -- saved segments --------------------------------------------------------------------------
def test_static_frozen_vs_dynamic_reevaluated() -> None:
    eng = build()
    dyn = eng.create_segment("viewers", "view() in last 7 days", now=NOW)
    st = eng.create_segment(
        "viewers_frozen", "view() in last 7 days", static=True, now=NOW
    )
    assert (dyn.static, dyn.version, st.static, st.version) == (False, 1, True, 1)
    assert set(eng.customer_ids(st.members.to_array())) == set("abek")
    assert dyn.members is None and dyn.dsl == "view() in last 7 days"
    eng.append_events([e("f", NOW - 60, "view", "i1")])
    assert members(eng, 'in segment "viewers"') == set("abefk")
    assert members(eng, 'in segment "viewers_frozen"') == set("abek")
    assert members(eng, 'in segment "viewers" and not in segment "viewers_frozen"') == {
        "f"
    }
    assert [s.name for s in eng.list_segments()] == ["viewers", "viewers_frozen"]
    assert eng.stats()["segments"] == 2


def test_segment_errors() -> None:
    eng = build()
    s1 = eng.create_segment("s1", 'gender = "m"', now=NOW)
    eng.create_segment("s2", 'in segment "s1" and rating > 5', now=NOW)
    assert members(eng, 'in segment "s2"') == {"d", "f"}
    with pytest.raises(AlreadyExists):
        eng.create_segment("s1", "rating > 1", now=NOW)
    with pytest.raises(InvalidQuery, match="cycle"):
        eng.update_segment("s1", 'in segment "s2"', now=NOW)
    with pytest.raises(InvalidQuery, match="cycle"):
        eng.create_segment("s3", 'in segment "s3"', now=NOW)
    with pytest.raises(InvalidQuery, match="does not exist"):
        eng.create_segment("s4", 'in segment "nope"', now=NOW)
    with pytest.raises(InvalidQuery, match="unknown attribute"):
        eng.create_segment("s5", 'gendr = "m"', now=NOW)  # dynamic: compiled on save
    with pytest.raises(FailedPrecondition, match="s2"):
        eng.delete_segment("s1")
    with pytest.raises(SegmentNotFound):
        eng.get_segment("s3")
    assert eng.get_segment("s1") == s1
    s1b = eng.update_segment("s1", 'gender = "f"', version=1, now=NOW)
    assert s1b.version == 2 and s1b.created_ms == s1.created_ms
    with pytest.raises(Conflict):
        eng.update_segment("s1", 'gender = "m"', version=1, now=NOW)
    assert eng.get_segment("s1").dsl == 'gender = "f"'
    assert members(eng, 'in segment "s2"') == set()  # f-gender with rating > 5: none
    eng.delete_segment("s2")
    eng.delete_segment("s1")
    assert eng.list_segments() == []
    with pytest.raises(SegmentNotFound):
        eng.delete_segment("s1")


def test_static_segment_may_be_deleted_under_a_static_user() -> None:
    eng = build()
    eng.create_segment("base", 'gender = "m"', now=NOW)
    eng.create_segment("frozen", 'in segment "base"', static=True, now=NOW)
    eng.delete_segment("base")  # frozen members no longer depend on it
    assert members(eng, 'in segment "frozen"') == {"a", "d", "f"}


# -- plan shape, size limits, deadline ---------------------------------------------------------
def test_identical_subexpressions_evaluated_once(eng: Engine) -> None:
    q = '(view() in last 7 days and gender = "m") or (view() in last 7 days and rating > 5)'
    prof = eng.profile(q, NOW)
    assert prof.count == 1  # a
    conds = [s.label for s in prof.steps]
    assert conds.count("view() in last 7 days") == 1
    assert members(eng, q) == {"a"}


def test_profile_keys(eng: Engine) -> None:
    prof = eng.profile('gender = "m" and not view()', NOW)
    assert isinstance(prof, Profile)
    assert prof.query == 'gender = "m" and not view()'
    assert (prof.count, prof.contacts) == (2, 12)  # d, f
    assert prof.ms >= 0
    assert all(isinstance(s, ProfileStep) for s in prof.steps)
    by_kind = {s.kind: s for s in prof.steps}
    assert (by_kind["and"].count, by_kind["and"].candidates) == (2, None)
    assert by_kind["attr"].count == 3
    # the NOT runs as a set difference: view() is asked only about the 3 men
    assert (by_kind["event"].count, by_kind["event"].candidates) == (1, 3)
    assert prof.to_dict()["steps"][0]["condition"] == prof.query


def test_deep_nesting(eng: Engine) -> None:
    from segd.errors import TooComplex
    from segd.segments.limits import MAX_DEPTH

    ast: dict = {"attr": "gender", "op": "=", "value": "m"}
    for i in range(MAX_DEPTH - 1):  # the deepest query the limit allows
        ast = (
            {"and": [ast]}
            if i % 2
            else {"or": [ast, {"attr": "rating", "op": "=", "value": 99}]}
        )
    assert members(eng, ast) == {"a", "d", "f"}
    nots: dict = {"attr": "gender", "op": "=", "value": "m"}
    for _ in range(MAX_DEPTH - 2):
        nots = {"not": nots}
    assert members(eng, nots) == {"a", "d", "f"}
    with pytest.raises(TooComplex):
        members(eng, {"not": {"not": nots}})


def test_300_conditions(eng: Engine) -> None:
    any_rating = {"or": [{"attr": "rating", "op": "=", "value": k} for k in range(300)]}
    assert members(eng, any_rating) == set("acdef")
    all_below = {
        "and": [{"attr": "rating", "op": "<", "value": k} for k in range(6, 306)]
    }
    assert members(eng, all_below) == set("ace")


def test_deadline_in_the_past(eng: Engine) -> None:
    past = time.monotonic() - 1
    with pytest.raises(DeadlineExceeded):
        eng.segment("view()", NOW, deadline=past)
    with pytest.raises(DeadlineExceeded):
        eng.profile('view() and gender = "m"', NOW, deadline=past)
    with pytest.raises(DeadlineExceeded):
        eng.explain("view()", "a", NOW, deadline=past)
    assert eng.count("view()", NOW, deadline=time.monotonic() + 60) == 7


# -- explain ------------------------------------------------------------------------------------
def test_explain_tree(eng: Engine) -> None:
    q = 'gender = "m" and view() count 2..5 in last 30 days'
    out = eng.explain(q, "a", NOW)
    assert isinstance(out, Explanation)
    assert out.member is True and out.customer_id == "a"
    assert out.attributes["city"] == "Kazan"
    assert (out.contacts, out.count, out.count_meaning) == (12, 1, COUNT_MEANING)
    tree = out.root
    assert (tree.kind, tree.operator, tree.matched, tree.evidence) == (
        "and", "and", True, None,
    )  # fmt: skip
    attr, event = tree.children
    assert (attr.kind, attr.operator, attr.label) == ("attr", "=", 'gender = "m"')
    assert attr.matched and attr.evidence == AttributeEvidence("gender", "m")
    assert (attr.count, event.count) == (3, len(members(eng, event.label)))
    assert event.matched and event.operator == "count" and attr.children == ()
    d = event.evidence
    assert isinstance(d, EventEvidence) and d.event == "view"
    assert d.matching_events == 2
    assert [iso(int(t.timestamp())) for t in d.last_times] == [
        iso(NOW - 2 * D),
        iso(NOW - 1 * D),
    ]
    assert (d.count_min, d.count_max) == (2, 5)
    assert (d.window_from, d.window_to) == (
        datetime.fromtimestamp(NOW - 30 * D, UTC),
        datetime.fromtimestamp(NOW, UTC),
    )


def test_explain_counts_are_whole_base_and_consistent(eng: Engine) -> None:
    """Every node's count is its own members in the whole base (not within the
    parent's candidates): and = intersection, or = union, not = complement."""
    q = '(gender = "m" or rating >= 5) and not view() in last 30 days'
    out = eng.explain(q, now=NOW)
    assert out.customer_id is None and out.member is None
    assert out.count == eng.count(q, NOW) == out.root.count
    for node in out.root.walk():
        assert node.count == len(members(eng, node.label)), node.label
        assert node.matched is None and node.evidence is None
    (and_,) = [n for n in out.root.walk() if n.kind == "and"]
    or_, not_ = and_.children
    assert [c.operator for c in or_.children] == ["=", ">="]
    assert not_.operator == "not" and not_.count == 12 - not_.children[0].count


def test_explain_keeps_not_and_segment_references(eng: Engine) -> None:
    eng.create_segment("men", 'gender = "m"', now=NOW)
    eng.create_segment("frozen_vip", 'tags contains_any ("vip")', static=True, now=NOW)
    q = 'in segment "men" and not email_open() in last 30 days and in segment "frozen_vip"'
    out = eng.explain(q, "a", NOW)
    ops = [n.operator for n in out.root.walk()]
    assert ops.count("not") == 1 and ops.count("segment") == 2
    ref = next(n for n in out.root.walk() if n.label == 'in segment "men"')
    assert ref.evidence == SegmentEvidence("men", static=False)
    assert [c.label for c in ref.children] == ['gender = "m"']
    frozen = next(n for n in out.root.walk() if n.label == 'in segment "frozen_vip"')
    assert frozen.evidence == SegmentEvidence("frozen_vip", static=True)
    assert frozen.children == () and frozen.count == 2
    eng.delete_segment("men")  # the engine is shared by the module's tests
    eng.delete_segment("frozen_vip")


def test_explain_non_member(eng: Engine) -> None:
    out = eng.explain('gender = "m" and view() count 2..5', "b", NOW)
    assert out.member is False
    attr, event = out.root.children
    assert attr.matched is False and attr.evidence.value == "f"
    assert event.matched is True and event.evidence.matching_events == 3
    out = eng.explain("not view()", "f", NOW)
    assert out.member is True and out.root.operator == "not"
    assert out.root.children[0].evidence.matching_events == 0
    assert out.root.children[0].matched is False
    out = eng.explain("order() sum(amount) >= 100", "a", NOW)
    assert out.root.evidence.sum == 170.0
    out = eng.explain("add_to_cart() then no order within 7 days", "h", NOW)
    assert out.member is False and out.root.evidence.matching_events == 0
    assert out.root.operator == "then_no"
    assert out.root.evidence.then_no == "order within 7d"
    assert "with no order within 7d after" in out.root.evidence.summary()
    out = eng.explain("orders_count >= 2", "c", NOW)
    assert out.root.evidence == AggregateEvidence("orders_count", 2)
    with pytest.raises(ContactNotFound):
        eng.explain("view()", "zz", NOW)


def test_unknown_catalog_values_warn_and_still_count(eng: Engine) -> None:
    q = 'view(category = "Outdor") or order(brand in ("Acme", "Zedd"))'
    res = eng.segment(q, NOW)
    assert res.count() == eng.count('order(brand = "Acme")', NOW)
    assert [(w.where, w.field, w.value, w.suggestion) for w in res.warnings] == [
        ("or[0].where[0].value", "category", "Outdor", "Outdoor"),
        ("or[1].where[0].value[1]", "brand", "Zedd", "Zed"),
    ]
    assert str(res.warnings[0]) == 'unknown category "Outdor" (did you mean "Outdoor"?)'
    assert eng.segment(q, NOW).warnings == res.warnings  # from the result cache too
    assert eng.explain(q, now=NOW).warnings == res.warnings
    # a category node ("Pets"), a full path and an item id are known: no warning
    ok = 'view(category in ("Pets", "Outdoor/Tents")) or view(item = "i1")'
    assert eng.segment(ok, NOW).warnings == ()
    assert eng.segment('view(item = "i11")', NOW).warnings[0].suggestion == "i1"


def test_attribute_names_are_case_sensitive_with_a_hint(eng: Engine) -> None:
    with pytest.raises(InvalidQuery) as err:
        eng.count('GENDER = "m"', NOW)
    assert "case-sensitive" in str(err.value) and "'gender'" in str(err.value)


# -- results and stats --------------------------------------------------------------------------
def test_segment_result_paging_sample_iter(eng: Engine) -> None:
    res = eng.segment("view() or order()", NOW)
    everyone = res.ids()
    assert set(everyone) == set("abcdeghijkl") and len(res) == res.count() == 11
    assert res.cids().tolist() == sorted(res.cids().tolist())
    pages = [res.ids(offset=o, limit=3) for o in range(0, 12, 3)]
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    assert sum(pages, []) == everyone
    assert res.ids(offset=11) == [] and res.ids(offset=2, limit=0) == []
    with pytest.raises(ValueError):
        res.ids(offset=-1)
    s1, s2 = res.sample(4, seed=1), res.sample(4, seed=1)
    assert s1 == s2 and len(set(s1)) == 4 and set(s1) <= set(everyone)
    assert s1 == [x for x in everyone if x in s1]  # in cid order
    assert res.sample(100, seed=3) == everyone
    assert res.sample(0) == []
    chunks = list(res.iter_ids(chunk=4))
    assert [len(c) for c in chunks] == [4, 4, 3] and sum(chunks, []) == everyone
    assert list(res) == everyone
    empty = eng.segment("email_click()", NOW)
    assert empty.ids() == [] and empty.sample(3) == [] and list(empty.iter_ids()) == []


def test_segment_result_is_a_snapshot() -> None:
    eng = build()
    res = eng.segment("view() in last 7 days", NOW)
    eng.append_events([e("f", NOW - 60, "view", "i1")])
    assert set(res.ids()) == set("abek")
    assert members(eng, "view() in last 7 days") == set("abefk")


def test_iter_ids_chunk_zero(eng: Engine) -> None:
    res = eng.segment("view()", NOW)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        next(res.iter_ids(chunk=0))
    assert sum(res.iter_ids(chunk=2), []) == res.ids()


def test_stats(eng: Engine) -> None:
    s = eng.stats()
    assert set(s) >= {
        "contacts", "events", "items", "event_types", "memory_bytes",
        "bytes_per_event", "bytes_per_contact", "segments", "version",
    }  # fmt: skip
    assert (s["contacts"], s["events"], s["items"]) == (12, 25, 4)
    assert s["event_types"] == {
        "view": 11, "order": 9, "add_to_cart": 4, "email_open": 1
    }  # fmt: skip
    assert set(s["memory_bytes"]) >= {"contacts", "events", "idmap", "total"} - {
        "contacts"
    }
    assert s["memory_bytes"]["total"] == sum(
        v for k, v in s["memory_bytes"].items() if k != "total"
    )
    assert s["bytes_per_event"] > 0 and s["bytes_per_contact"] > 0
    assert s["segments"] == 0


def test_result_cache_is_dropped_by_every_write() -> None:
    # Repeated (query, now) pairs are served from the result cache; any write must
    # invalidate it, or a count would miss the events just ingested.
    eng = build()
    q = "view() in last 7 days"
    first = eng.segment(q, NOW)
    assert eng.segment(q, NOW).bitmap is first.bitmap  # served from the cache
    eng.append_events([e("f", NOW - 60, "view", "i1")])
    after = eng.segment(q, NOW)
    assert after.bitmap is not first.bitmap
    assert set(after.ids()) == set(first.ids()) | {"f"}
    eng.upsert_contact("zz", city="Nowhere")
    assert eng.segment(q, NOW).bitmap is not after.bitmap


def test_now_defaults_to_the_current_second() -> None:
    from segd.timeutil import resolve_now

    assert resolve_now(None) == int(resolve_now(None))
