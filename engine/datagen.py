"""Deterministic demo data: contacts, an item catalog and a year of skewed events.

Used by ``segctl serve --demo``, the tests and the benchmarks, so the same ``seed`` (and
``now``) must give identical tables on every run. Every column is built with numpy over
whole arrays and turned into Arrow through small vocabularies (``take``) or fixed-width
ids written straight into Arrow buffers: no Python object per contact or event, so 10M
contacts / 200M events fit in RAM and 1M / 20M takes seconds.

Run ``python -m engine.datagen --contacts 100k --out DIR`` to write Parquet files.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["DemoData", "generate", "parse_scale", "main", "DEFAULT_NOW", "EVENT_TYPES"]

DEFAULT_NOW = datetime(2025, 6, 30, tzinfo=UTC)
"""Fixed default ``now``: relative periods in tests resolve the same on any day."""

DAY_S = 86_400
WINDOW_DAYS = 365
EVENT_TYPES = (
    "view", "add_to_cart", "add_to_favorites", "remove_from_cart", "order",
    "search", "email_open", "email_click", "ad_view", "ad_click",
)  # fmt: skip
(VIEW, CART, FAV, UNCART, ORDER, SEARCH, EOPEN, ECLICK, ADVIEW, ADCLICK) = range(10)
# Mix of *actions*: orders then expand to 1-4 lines, most lines get a prior cart, and
# per-contact remaps (non-buyers, unsubscribed, not ad-targeted) turn some into views;
# the final rows land near 60% views / 10% carts.
_ACTION_P = (0.50, 0.085, 0.035, 0.025, 0.045, 0.09, 0.10, 0.025, 0.07, 0.025)
_ITEM_TYPES = (VIEW, CART, FAV, UNCART, ORDER)


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split("|"))


CITIES = _words(  # Zipf by position
    "Moscow|Saint Petersburg|Novosibirsk|Yekaterinburg|Kazan|Nizhny Novgorod|"
    "Chelyabinsk|Krasnoyarsk|Samara|Ufa|Rostov-on-Don|Omsk|Krasnodar|Voronezh|Perm|"
    "Volgograd|Saratov|Tyumen|Tolyatti|Izhevsk|Barnaul|Ulyanovsk|Irkutsk|Khabarovsk|"
    "Yaroslavl|Vladivostok|Makhachkala|Tomsk|Orenburg|Kemerovo|Novokuznetsk|Ryazan|"
    "Naberezhnye Chelny|Astrakhan|Penza|Kirov|Lipetsk|Cheboksary|Balashikha|Kaliningrad"
)
DOMAINS = _words("gmail.com|yandex.ru|mail.ru|outlook.com|icloud.com|rambler.ru")
TAGS = (  # (tag, share of contacts carrying it)
    ("newsletter", 0.35), ("mobile_app", 0.30), ("loyalty_card", 0.20), ("vip", 0.03),
    ("pet_owner", 0.15), ("outdoor_fan", 0.10), ("parent", 0.18), ("car_owner", 0.25),
    ("student", 0.08), ("b2b", 0.02), ("gamer", 0.06), ("bargain_hunter", 0.12),
    ("early_adopter", 0.04), ("traveller", 0.09), ("runner", 0.05), ("eco", 0.07),
)  # fmt: skip
COLOURS = _words(
    "black|white|grey|blue|red|green|beige|brown|navy|pink|yellow|orange|purple|silver|gold"
)
SIZES = _words("XS|S|M|L|XL|XXL")
# (top, share of items, typical price, brands by popularity, "mid: leaf, ...; mid: ...")
_CATALOG_SPEC = (
    ("Electronics", 0.16, 15e3, "Apple|Samsung|Xiaomi|Sony|Huawei|JBL|Lenovo|Philips",
     "Phones: Smartphones, Cases, Chargers; Laptops: Ultrabooks, Gaming; "
     "Audio: Headphones, Speakers"),
    ("Home", 0.15, 2500.0, "IKEA|Tefal|Bosch|Philips|Zwilling|Hoff",
     "Kitchen: Pans, Knives, Kettles; Furniture: Chairs, Tables; "
     "Textiles: Bedding, Towels"),
    ("Fashion", 0.15, 3500.0, "Nike|Adidas|Zara|Uniqlo|Puma|Levi's",
     "Men: Shoes, Jackets, Shirts; Women: Dresses, Shoes, Bags"),
    ("Outdoor", 0.12, 4000.0, "Coleman|Salomon|Shimano|Quechua|Jack Wolfskin|Primus",
     "Tents: 2-person, 4-person, Family; Fishing rods: Spinning, Fly, Telescopic; "
     "Cookware: Stoves, Pots, Mugs; Sleeping bags: Summer, Winter"),
    ("Pets", 0.10, 900.0, "Royal Canin|Whiskas|Purina|Pedigree|Hill's|Trixie",
     "Cats: Dry food, Wet food, Toys; Dogs: Dry food, Treats, Leashes; "
     "Fish: Aquariums, Food"),
    ("Sports", 0.10, 3000.0, "Nike|Adidas|Asics|Reebok|Demix",
     "Running: Shoes, Apparel; Fitness: Dumbbells, Mats"),
    ("Auto", 0.08, 6000.0, "Michelin|Nokian|Bridgestone|Continental|Bosch",
     "Tyres: Winter, Summer; Accessories: Mats, Chargers"),
    ("Beauty", 0.08, 1200.0, "L'Oreal|Nivea|Garnier|La Roche-Posay|Philips",
     "Skin: Creams, Masks; Hair: Shampoo, Dryers"),
    ("Kids", 0.06, 2000.0, "LEGO|Hasbro|Mattel|Chicco",
     "Toys: Construction, Dolls; Strollers: City, Travel"),
)  # fmt: skip
TOPS = tuple(spec[0] for spec in _CATALOG_SPEC)
_SIZED_TOPS = ("Fashion", "Sports")
_MODIFIERS = _words(
    "winter|summer|cheap|best|kids|mens|womens|wireless|waterproof|black|white|large|"
    "small|new|organic|leather|portable|electric|smart|gift|pro|mini|sale|premium|eco"
)
_NOUNS = _words(
    "tyres|tent|jacket|boots|cat food|dog food|headphones|phone|laptop|sneakers|"
    "fishing rod|sleeping bag|kettle|pan|chair|lamp|backpack|watch|shampoo|cream|toys|"
    "bike|gloves|mug|speaker"
)
ADVERTISERS = tuple("ABDEFGHJKLMNPRST")  # Zipf by position; "A" is the biggest
_CAMPAIGN_KINDS = ("spring", "summer", "retarget", "brand", "black-friday", "new-year")
ADS_PER_CAMPAIGN = 4


def _phrases() -> tuple[str, ...]:
    """~500 search phrases in popularity order; a fixed shuffle so ranks mix nouns."""
    combos = [f"{m} {n}" for m in _MODIFIERS for n in _NOUNS]
    order = np.random.default_rng(20250630).permutation(len(combos))
    ranked = [combos[i] for i in order if combos[i] != "winter tyres"][:499]
    return (ranked[0], ranked[1], "winter tyres", *ranked[2:])


def _campaigns() -> tuple[tuple[str, ...], np.ndarray]:
    """Campaign names and their advertiser index; advertiser "A" owns campaign "C"."""
    names: list[str] = []
    owner: list[int] = []
    for a, adv in enumerate(ADVERTISERS):
        kinds = (
            ("C", *(f"A-{k}" for k in _CAMPAIGN_KINDS[:3]))
            if a == 0
            else tuple(
                f"{adv}-{k}" for k in _CAMPAIGN_KINDS[: 1 + a % len(_CAMPAIGN_KINDS)]
            )
        )
        names += kinds
        owner += [a] * len(kinds)
    return tuple(names), np.asarray(owner, dtype=np.int32)


PHRASES = _phrases()
CAMPAIGNS, _CAMPAIGN_OWNER = _campaigns()


@dataclass(frozen=True, eq=False)
class DemoData:
    """The generated tables; ``now`` is the instant relative periods resolve against."""

    contacts: pa.Table
    items: pa.Table
    events: pa.Table
    now: datetime

    def write_parquet(self, dir: str | Path) -> dict[str, Path]:
        """Write ``{contacts,items,events}.parquet`` (zstd) under ``dir``; the paths."""
        out = Path(dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in ("contacts", "items", "events"):
            paths[name] = out / f"{name}.parquet"
            table = getattr(self, name)
            pq.write_table(
                table, paths[name], compression="zstd", row_group_size=1 << 20
            )
        return paths


def parse_scale(text: str) -> int:
    """``"2500"``, ``"100k"``, ``"1.5m"``, ``"10M"`` -> a positive whole row count."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", str(text).replace("_", ""))
    if m is None:
        raise ValueError(
            f"bad scale {text!r}: expected a number with an optional k/m suffix, "
            "e.g. 2500, 100k, 1m, 10m"
        )
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]
    integer, _, fraction = m.group(1).partition(".")
    part, rest = divmod(int(fraction or 0) * scale, 10 ** len(fraction))
    value = int(integer) * scale + part
    if rest or value <= 0:  # "1.5" rows or "0k"
        raise ValueError(f"bad scale {text!r}: must be a positive whole number of rows")
    return value


# ---------------------------------------------------------------- array building blocks


def _cdf(weights: np.ndarray) -> np.ndarray:
    cum = np.cumsum(np.asarray(weights, dtype=np.float64))
    return cum / cum[-1]


def _zipf_cdf(n: int, s: float = 1.0) -> np.ndarray:
    return _cdf(1.0 / np.arange(1, n + 1, dtype=np.float64) ** s)


def _draw(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    """Indices distributed by ``cdf`` (inverse-CDF sampling, int32)."""
    idx = np.searchsorted(cdf, rng.random(size), side="right")
    return np.minimum(idx, len(cdf) - 1).astype(np.int32)


def _strings(vocab: Sequence[str], idx: np.ndarray, valid: np.ndarray | None = None):
    """Arrow strings ``vocab[idx]`` (NULL where not ``valid``), no per-row objects."""
    if valid is None:
        return pa.array(vocab, type=pa.string()).take(pa.array(idx.astype(np.int32)))
    indices = pa.array(np.where(valid, idx, 0).astype(np.int32), mask=~valid)
    return pa.array(vocab, type=pa.string()).take(indices)


def _format_ids(prefix: str, numbers: np.ndarray, width: int, valid=None) -> pa.Array:
    """``prefix`` + zero-padded ``numbers``, written straight into Arrow buffers."""
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    chosen = numbers if valid is None else numbers[valid]
    digits = np.asarray(chosen, dtype=np.int64).copy()
    row = len(head) + width
    buf = np.empty((len(chosen), row), dtype=np.uint8)
    buf[:, : len(head)] = head
    for k in range(width - 1, -1, -1):
        buf[:, len(head) + k] = digits % 10 + 48
        digits //= 10
    if digits.any():
        raise ValueError(f"number too wide for {width} digits after {prefix!r}")
    n = len(numbers)
    if valid is None:
        offsets = np.arange(0, (n + 1) * row, row, dtype=np.int32)
        return pa.Array.from_buffers(
            pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(buf)]
        )
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(valid.astype(np.int32) * row, out=offsets[1:])
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        pa.string(),
        n,
        [bitmap, pa.py_buffer(offsets), pa.py_buffer(buf)],
        null_count=int(n - np.count_nonzero(valid)),
    )


def _id_width(count: int, minimum: int) -> int:
    return max(minimum, len(str(count)))


# ---------------------------------------------------------------- contacts and items


def _contacts(
    rng: np.random.Generator, n: int, now_s: int, reg_s: np.ndarray
) -> pa.Table:
    """Profiles with realistic NULL shares; ``reg_s`` are registration epoch seconds."""
    gender = _draw(rng, _cdf([0.46, 0.47, 0.07]), n)
    age_years = np.clip(rng.normal(38.0, 12.0, n), 16.0, 85.0)
    age_days = (age_years * 365.2425).astype(np.int64)
    has_birth = rng.random(n) >= 0.08
    city = _draw(rng, _zipf_cdf(len(CITIES), 0.9), n)
    has_city = rng.random(n) >= 0.03
    has_email = rng.random(n) >= 0.04
    domain = _draw(rng, _zipf_cdf(len(DOMAINS)), n)
    has_phone = rng.random(n) >= 0.30
    phone = 9_000_000_000 + rng.integers(0, 999_999_999, n)
    email_sub = has_email & (rng.random(n) < 0.6)
    sms_sub = has_phone & (rng.random(n) < 0.45)
    rating = np.minimum(1 + rng.binomial(9, 0.55, n), 10).astype(np.int64)
    has_rating = rng.random(n) >= 0.65
    tag_mask = np.stack([rng.random(n) < share for _, share in TAGS], axis=1)
    rows, tag_idx = np.nonzero(tag_mask)  # row-major: a contact's tags are contiguous
    tag_offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=tag_offsets[1:])
    ids = _format_ids("c", np.arange(1, n + 1), _id_width(n, 8))
    emails = pc.binary_join_element_wise(ids, _strings(DOMAINS, domain, has_email), "@")
    birth = (now_s // DAY_S - age_days).astype(np.int32)
    return pa.table(
        {
            "customer_id": ids,
            "gender": _strings(("m", "f"), gender, gender < 2),
            "birth_date": pa.array(birth, type=pa.date32(), mask=~has_birth),
            "city": _strings(CITIES, city, has_city),
            "email": emails,
            "phone": _format_ids("+7", phone, 10, has_phone),
            "email_subscribed": pa.array(email_sub),
            "sms_subscribed": pa.array(sms_sub),
            "registered_at": pa.array(reg_s, type=pa.timestamp("s", tz="UTC")),
            "rating": pa.array(rating, mask=~has_rating),
            "tags": pa.ListArray.from_arrays(
                pa.array(tag_offsets), _strings([t for t, _ in TAGS], tag_idx)
            ),
        }
    )


def _leaves() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Leaf category paths, their top-level index and their share of the catalog."""
    paths, tops, shares = [], [], []
    for t, (top, share, _, _, tree) in enumerate(_CATALOG_SPEC):
        mids = [part.split(":") for part in tree.split(";")]
        for mid, leaves in mids:
            names = [leaf.strip() for leaf in leaves.split(",")]
            paths += [f"{top}/{mid.strip()}/{leaf}" for leaf in names]
            tops += [t] * len(names)
            shares += [share / len(mids) / len(names)] * len(names)
    return paths, np.asarray(tops, dtype=np.int32), np.asarray(shares)


def _items(rng: np.random.Generator, m: int) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """The catalog; also returns each item's top-level index and price (for amounts)."""
    paths, leaf_top, leaf_share = _leaves()
    leaf = _draw(rng, _cdf(leaf_share), m)
    top = leaf_top[leaf]
    brand_vocab = sorted({b for spec in _CATALOG_SPEC for b in _words(spec[3])})
    brand = np.zeros(m, dtype=np.int32)
    base_price = np.zeros(m)
    for t, (_, _, price, brand_text, _) in enumerate(_CATALOG_SPEC):  # ~9 tops
        brands = _words(brand_text)
        sel = np.flatnonzero(top == t)
        pick = _draw(rng, _zipf_cdf(len(brands), 1.2), len(sel))
        brand[sel] = np.asarray([brand_vocab.index(b) for b in brands])[pick]
        base_price[sel] = price
    has_brand = rng.random(m) >= 0.03
    price = np.maximum(np.round(base_price * rng.lognormal(0.0, 0.6, m)) - 0.01, 0.99)
    colour = _draw(rng, _zipf_cdf(len(COLOURS), 0.8), m)
    has_colour = rng.random(m) >= 0.15
    sized = np.isin(top, [TOPS.index(t) for t in _SIZED_TOPS])
    size = _draw(rng, _cdf([1, 3, 5, 5, 3, 1]), m)
    table = pa.table(
        {
            "item_id": _format_ids("i", np.arange(1, m + 1), _id_width(m, 7)),
            "category": _strings(paths, leaf),
            "brand": _strings(brand_vocab, brand, has_brand),
            "price": pa.array(price),
            "in_stock": pa.array(rng.random(m) < 0.88),
            "colour": _strings(COLOURS, colour, has_colour),
            "size": _strings(SIZES, size, sized),
        }
    )
    return table, top, price


# ---------------------------------------------------------------- events


def _day_cdf(window_start_s: int) -> np.ndarray:
    """CDF over the 365 window days (length 366, from 0): weekly x yearly x growth."""
    days = np.arange(WINDOW_DAYS)
    epoch_day = window_start_s // DAY_S + days
    weekday = (epoch_day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    weekly = np.array([0.93, 0.95, 0.98, 1.0, 1.04, 1.1, 1.12])[weekday]
    doy = (epoch_day - 10957) % 365.2425  # days since a 1 January (2000-01-01 = 10957)
    yearly = 1.0 + 0.25 * np.cos(2 * np.pi * (doy - 350) / 365.2425)
    black_friday = 1.0 + 0.8 * np.exp(-(((doy - 331) / 4.0) ** 2))
    weights = weekly * yearly * black_friday * (1.0 + 0.3 * days / WINDOW_DAYS)
    return np.concatenate([[0.0], _cdf(weights)])


_HOURLY = np.array(
    [2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 6, 7, 7, 6, 6, 6, 7, 8, 9, 10, 9, 7, 4]
)


@dataclass
class _People:
    """Per-person (contacts, then event-only ids) activity parameters, all arrays."""

    counts: np.ndarray  # actions per person
    start_day: np.ndarray  # first / one-past-last active day in the window
    end_day: np.ndarray
    buyer: np.ndarray
    emailable: np.ndarray
    ad_target: np.ndarray
    fav_top: np.ndarray


def _people(
    rng, n: int, n_orphans: int, reg_day: np.ndarray, per_person: float, emailable
):
    total = n + n_orphans
    sigma = 1.2  # lognormal rate: a heavy tail of very active contacts
    active = rng.random(total) >= 0.08
    mu = np.log(per_person / 0.92 / 1.05) - sigma**2 / 2  # 1.05: order lines + carts
    counts = rng.poisson(rng.lognormal(mu, sigma, total)) * active
    start = np.concatenate([reg_day, rng.integers(0, WINDOW_DAYS, n_orphans)])
    churned = rng.random(total) < 0.25
    end = np.where(
        churned,
        start + 1 + (rng.random(total) * (WINDOW_DAYS - start)).astype(int),
        365,
    )
    return _People(
        counts=counts.astype(np.int64),
        start_day=start.astype(np.int64),
        end_day=np.minimum(end, WINDOW_DAYS).astype(np.int64),
        buyer=rng.random(total) < 0.55,
        emailable=np.concatenate([emailable, np.zeros(n_orphans, dtype=bool)]),
        ad_target=rng.random(total) < 0.4,
        fav_top=_draw(rng, _cdf([spec[1] for spec in _CATALOG_SPEC]), total),
    )


def _action_times(rng, people: _People, cid: np.ndarray, window_start_s: int):
    """Seconds since the window start, inside each person's active days (int64)."""
    day_cdf = _day_cdf(window_start_s)
    lo, hi = day_cdf[people.start_day[cid]], day_cdf[people.end_day[cid]]
    day = (
        np.searchsorted(day_cdf, lo + rng.random(len(cid)) * (hi - lo), side="right")
        - 1
    )
    day = np.clip(day, people.start_day[cid], people.end_day[cid] - 1)
    hour = _draw(rng, _cdf(_HOURLY), len(cid))
    return day * DAY_S + hour * 3600 + rng.integers(0, 3600, len(cid))


def _action_items(rng, people, cid, item_top: np.ndarray) -> np.ndarray:
    """Zipf item per action; half the draws stay in the person's favourite top."""
    m = len(item_top)
    rank_to_item = rng.permutation(m).astype(np.int32)
    item = rank_to_item[_draw(rng, _zipf_cdf(m, 1.05), len(cid))]
    fav = people.fav_top[cid]
    use_fav = rng.random(len(cid)) < 0.5
    top_of_ranked = item_top[rank_to_item]
    for t in range(len(TOPS)):  # loop over the ~9 top categories
        sel = np.flatnonzero(use_fav & (fav == t))
        pool = rank_to_item[top_of_ranked == t]  # this category's items, by popularity
        if len(sel) and len(pool):
            item[sel] = pool[_draw(rng, _zipf_cdf(len(pool), 1.05), len(sel))]
    return item


def _event_rows(rng, people: _People, item_top, window_start_s: int) -> dict:
    """Unsorted rows as numpy columns: cid, ts (s into window), kind, item, aux, qty."""
    cid = np.repeat(np.arange(len(people.counts), dtype=np.int32), people.counts)
    kind = _draw(rng, _cdf(_ACTION_P), len(cid)).astype(np.int8)
    kind[(kind == ORDER) & ~people.buyer[cid]] = VIEW
    kind[((kind == EOPEN) | (kind == ECLICK)) & ~people.emailable[cid]] = VIEW
    kind[((kind == ADVIEW) | (kind == ADCLICK)) & ~people.ad_target[cid]] = VIEW
    ts = _action_times(rng, people, cid, window_start_s)
    item = _action_items(rng, people, cid, item_top)
    item[~np.isin(kind, _ITEM_TYPES)] = -1
    # orders: 1-4 lines sharing the order number, time and contact
    is_order = kind == ORDER
    lines = np.where(
        is_order, 1 + _draw(rng, _cdf([0.55, 0.25, 0.12, 0.08]), len(cid)), 1
    )
    order_no = np.where(is_order, np.cumsum(is_order), -1).astype(np.int32)
    row_start = np.cumsum(lines) - lines
    cid, kind, ts, item, order_no = (
        np.repeat(a, lines) for a in (cid, kind, ts, item, order_no)
    )
    line_no = np.arange(len(cid)) - np.repeat(row_start, lines)
    extra = np.flatnonzero(line_no > 0)
    item[extra] = _action_items(rng, people, cid[extra], item_top)
    is_order = kind == ORDER
    qty = np.where(is_order, 1 + _draw(rng, _cdf([0.8, 0.15, 0.05]), len(cid)), 0)
    aux = order_no  # order number, phrase index or ad index depending on the type
    is_search = np.flatnonzero(kind == SEARCH)
    aux[is_search] = _draw(rng, _zipf_cdf(len(PHRASES), 1.0), len(is_search))
    is_ad = np.flatnonzero((kind == ADVIEW) | (kind == ADCLICK))
    adv = _draw(rng, _zipf_cdf(len(ADVERTISERS), 1.1), len(is_ad))
    first = np.searchsorted(_CAMPAIGN_OWNER, np.arange(len(ADVERTISERS)))
    n_camp = np.bincount(_CAMPAIGN_OWNER, minlength=len(ADVERTISERS))
    camp = first[adv] + (rng.random(len(is_ad)) * n_camp[adv]).astype(np.int32)
    aux[is_ad] = camp * ADS_PER_CAMPAIGN + rng.integers(0, ADS_PER_CAMPAIGN, len(is_ad))
    # most order lines were put in the cart shortly before (abandoned carts stay rarer)
    pre = np.flatnonzero(is_order & (rng.random(len(cid)) < 0.6))
    pre_ts = ts[pre] - rng.integers(60, 3 * DAY_S, len(pre))
    pre, pre_ts = (
        pre[pre_ts >= 0],
        pre_ts[pre_ts >= 0],
    )  # the cart was before the window
    return {
        "cid": np.concatenate([cid, cid[pre]]),
        "ts": np.concatenate([ts, pre_ts]),
        "kind": np.concatenate([kind, np.full(len(pre), CART, dtype=np.int8)]),
        "item": np.concatenate([item, item[pre]]),
        "aux": np.concatenate([aux, np.full(len(pre), -1, dtype=np.int32)]),
        "qty": np.concatenate([qty, np.zeros(len(pre), dtype=qty.dtype)]).astype(
            np.int8
        ),
    }


def _events_table(rows: dict, window_start_s: int, ctx: dict) -> pa.Table:
    """Arrow events in ts order from the numpy ``rows`` (consumed: emptied as it goes).

    Built column by column, each in chunks, and each numpy source is dropped right after
    its last column: the peak is about the finished table plus what is left, which is
    what lets 200M events fit in 24 GB.
    """
    key = rows.pop("key")  # sorted (ts * n + row): gives ts, then the row positions
    n = max(len(key), 1)
    parts = [slice(lo, lo + _CHUNK_ROWS) for lo in range(0, len(key), _CHUNK_ROWS)]
    parts = parts or [slice(0, 0)]
    ts_type = pa.timestamp("s", tz="UTC")
    cols = {"ts": [pa.array(key[p] // n + window_start_s, type=ts_type) for p in parts]}
    pos = (key % n).astype(np.int64 if n >= 2**31 else np.int32)
    del key
    for src in list(rows):  # one gather per column; slices below are then contiguous
        rows[src] = rows[src][pos]
    del pos

    def column(name: str, build: Callable[..., pa.Array], *sources: str) -> None:
        cols[name] = [build(*(rows[src][p] for src in sources)) for p in parts]

    def kinds(kind: np.ndarray, *wanted: int) -> np.ndarray:
        return np.isin(kind, wanted)

    width, item_ids, price = ctx["cid_width"], ctx["item_ids"], ctx["price"]
    ad_names = [f"{c}-ad{k + 1}" for c in CAMPAIGNS for k in range(ADS_PER_CAMPAIGN)]
    camp = np.arange(len(ad_names)) // ADS_PER_CAMPAIGN
    column("customer_id", lambda cid: _format_ids("c", cid + 1, width), "cid")
    del rows["cid"]
    column("item_id", lambda it: item_ids.take(pa.array(it, mask=it < 0)), "item")
    column(
        "amount",
        lambda it, qty: pa.array(np.round(price[it] * qty, 2), mask=qty == 0),
        "item",
        "qty",
    )
    del rows["item"], rows["qty"]
    column(
        "order_id",
        lambda k, aux: _format_ids("o", np.maximum(aux, 0), 9, k == ORDER),
        "kind",
        "aux",
    )
    column("phrase", lambda k, aux: _strings(PHRASES, aux, k == SEARCH), "kind", "aux")

    def ad_part(k: np.ndarray, aux: np.ndarray, vocab, of_ad: np.ndarray) -> pa.Array:
        is_ad = kinds(k, ADVIEW, ADCLICK)
        return _strings(vocab, of_ad[np.where(is_ad, aux, 0)], is_ad)

    for name, vocab, of_ad in (
        ("advertiser", ADVERTISERS, _CAMPAIGN_OWNER[camp]),
        ("campaign", CAMPAIGNS, camp),
        ("ad", ad_names, np.arange(len(ad_names))),
    ):
        column(
            name, lambda k, aux, v=vocab, m=of_ad: ad_part(k, aux, v, m), "kind", "aux"
        )
    del rows["aux"]
    column(
        "channel",
        lambda k: _strings(("email",), k * 0, kinds(k, EOPEN, ECLICK)),
        "kind",
    )
    column("type", lambda k: _strings(EVENT_TYPES, k), "kind")
    del rows["kind"]
    names = ["customer_id", "ts", "type", "item_id", "amount", "order_id", "phrase"]
    names += ["advertiser", "campaign", "ad", "channel"]
    return pa.table({name: pa.chunked_array(cols[name]) for name in names})


# ---------------------------------------------------------------- orchestration

_CHUNK_ROWS = 1 << 22  # events per Arrow chunk: bounds temporaries, keeps offsets int32


def generate(
    contacts: int,
    *,
    seed: int = 0,
    now: datetime | None = None,
    events_per_contact: float = 20.0,
    progress: Callable[[str, int, int], None] | None = None,
) -> DemoData:
    """Build the demo dataset deterministically from ``seed`` (and ``now``).

    Events lie in ``[now - 365 d, now)``, sorted by ``ts``; about ``events_per_contact``
    per contact on average, heavy-tailed. Contacts number ``contacts // 200`` more ids
    appear only in events (unknown ids create contacts), as live traffic does.
    ``progress(phase, done, total)`` is called after each phase (and per events chunk).
    """
    if contacts < 0:
        raise ValueError(f"contacts must be >= 0, got {contacts}")
    if events_per_contact <= 0:
        raise ValueError(f"events_per_contact must be > 0, got {events_per_contact}")
    now = DEFAULT_NOW if now is None else now
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    now = datetime.fromtimestamp(int(now.timestamp()), tz=UTC)
    now_s = int(now.timestamp())
    window_start_s = now_s - WINDOW_DAYS * DAY_S
    report = progress or (lambda phase, done, total: None)
    rng = np.random.default_rng(seed)

    age_s = np.where(
        rng.random(contacts) < 0.35,
        rng.random(contacts) * WINDOW_DAYS * DAY_S,
        (1 + rng.random(contacts) * 5) * WINDOW_DAYS * DAY_S,
    ).astype(np.int64)
    reg_day = np.maximum(WINDOW_DAYS - age_s // DAY_S - 1, 0)
    contact_table = _contacts(rng, contacts, now_s, now_s - age_s)
    report("contacts", contacts, contacts)
    n_items = max(200, contacts // 20)
    items, item_top, price = _items(rng, n_items)
    report("items", n_items, n_items)

    n_orphans = contacts // 200
    emailable = contact_table.column("email_subscribed").to_numpy()
    people = _people(rng, contacts, n_orphans, reg_day, events_per_contact, emailable)
    rows = _event_rows(rng, people, item_top, window_start_s)
    n_rows = len(rows["cid"])
    report("activity", n_rows, n_rows)
    # one sort of unique keys (ts, row): deterministic whatever algorithm numpy picks
    rows["key"] = rows.pop("ts").astype(np.int64) * max(n_rows, 1) + np.arange(n_rows)
    rows["key"].sort()
    report("sort", n_rows, n_rows)
    ctx = {
        "price": price,
        "item_ids": items.column("item_id").combine_chunks(),
        "cid_width": _id_width(contacts + n_orphans, 8),
    }
    events = _events_table(rows, window_start_s, ctx)
    report("events", n_rows, n_rows)
    return DemoData(contacts=contact_table, items=items, events=events, now=now)


def main(argv: Sequence[str] | None = None, stderr=None) -> int:
    """``python -m engine.datagen --contacts 100k --out DIR``: write Parquet files."""
    err = stderr or sys.stderr
    parser = argparse.ArgumentParser(
        prog="python -m engine.datagen",
        description="Write the deterministic demo dataset as Parquet.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--contacts", default="100k", help="e.g. 2500, 100k, 1m, 10m")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--now", default=DEFAULT_NOW.isoformat(), help="ISO-8601, UTC")
    parser.add_argument("--events-per-contact", type=float, default=20.0)
    args = parser.parse_args(argv)
    try:
        contacts = parse_scale(args.contacts)
        now = datetime.fromisoformat(args.now.replace("Z", "+00:00"))
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
    except ValueError as exc:
        parser.error(str(exc))
    started = time.monotonic()

    def show(phase: str, done: int, total: int) -> None:
        if phase != "events" or done == total:  # one line per phase
            elapsed = time.monotonic() - started
            print(
                f"[{elapsed:7.1f}s] {phase:<9} {done:>13,} rows", file=err, flush=True
            )

    data = generate(
        contacts,
        seed=args.seed,
        now=now,
        events_per_contact=args.events_per_contact,
        progress=show,
    )
    for name, path in data.write_parquet(args.out).items():
        rows = getattr(data, name).num_rows
        show(f"wrote {name} to {path}:", rows, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
