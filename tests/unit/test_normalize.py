"""Email / phone normalisation (segd.normalize): the rules identity and exports share."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segd.normalize import normalize_email, normalize_phone, sha256_hex


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Anna.Petrova@Example.COM ", "anna.petrova@example.com"),
        ("a@b", "a@b"),
        ("no-at-sign", None),
        ("two@@signs.ru", None),
        ("@domain.ru", None),
        ("local@", None),
        ("sp ace@x.ru", None),
        ("", None),
    ],
)
def test_email(raw: str, expected: str | None) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+7 (912) 345-67-89", "79123456789"),
        ("8 912 345 67 89", "79123456789"),
        ("9123456789", "79123456789"),
        ("+1 415 555 2671", "14155552671"),
        ("0044 20 7946 0958", "442079460958"),
        ("+44 20 7946 0958", "442079460958"),
        ("12345", None),
        ("+7 912 abc", None),
        ("7+9123456789", None),
        ("+1234567890123456", None),
        ("", None),
    ],
)
def test_phone(raw: str, expected: str | None) -> None:
    assert normalize_phone(raw) == expected


@given(
    st.from_regex(r"\A[a-z0-9._]{1,10}@[a-z0-9.]{1,10}\Z"),
    st.sampled_from(["", " ", "\t"]),
)
def test_email_is_idempotent_and_case_blind(address: str, pad: str) -> None:
    once = normalize_email(pad + address.upper() + pad)
    assert once == address
    assert normalize_email(once) == once


@given(st.integers(min_value=10**9, max_value=10**10 - 1))
def test_phone_spellings_of_one_russian_number_agree(national: int) -> None:
    n = str(national)
    spellings = [f"+7{n}", f"8{n}", n, f"+7 ({n[:3]}) {n[3:6]}-{n[6:8]}-{n[8:]}"]
    assert {normalize_phone(s) for s in spellings} == {"7" + n}


def test_sha256_matches_hashlib() -> None:
    assert sha256_hex("a@b") == hashlib.sha256(b"a@b").hexdigest()
