"""native/addresses.pyx against its oracle: segd.normalize + hashlib.

The kernel must give, for every input, what ``normalize_email`` / ``normalize_phone``
followed by ``hashlib.sha256`` give; ``segd.export.address_digests`` adds the Python path
for the rows the kernel hands back (non-ASCII, very long), so it must agree on any text.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segd.export import address_digests
from segd.native import addresses
from segd.normalize import normalize_email, normalize_phone

NORMALIZE = {"email": normalize_email, "phone": normalize_phone}
KIND = {"email": addresses.EMAIL, "phone": addresses.PHONE}
# the characters the rules are about, and their neighbours
ASCII = " \t\n\x0b\x0c\r\x1c\x1f\x20@aAzZ09+().-_8700,;\x00\x7f"
ODD = "\xa0\u2003\u0130\u212a\xe9\u0660"  # NBSP, em space, İ, Kelvin K, é, Arabic 0


def oracle(values: list[str | None], kind: str) -> list[bytes | None]:
    out = []
    for v in values:
        norm = None if v is None else NORMALIZE[kind](v)
        out.append(None if norm is None else hashlib.sha256(norm.encode()).digest())
    return out


@pytest.mark.parametrize("length", [0, 1, 55, 56, 63, 64, 65, 119, 120, 200])
def test_sha256_padding_edges(length: int) -> None:
    data = bytes(range(256))[:length] if length <= 256 else b"x" * length
    assert addresses.sha256_many([data]) == [hashlib.sha256(data).digest()]


def test_known_values() -> None:
    values = [" Ann@Example.COM ", "a@b@c", "@b", "a@", "a b@c", None, "x@y"]
    status, digests = addresses.hash_addresses(pa.array(values), addresses.EMAIL)
    assert status.tolist() == [1, 0, 0, 0, 0, 0, 1]
    assert bytes(digests[0]) == hashlib.sha256(b"ann@example.com").digest()
    phones = ["+7 (912) 345-67-89", "8 912 000 11 22", "0044 20 7946 0958", "12-34",
              "9123456789", "+0123456789", "1+2", "+", ""]  # fmt: skip
    status, digests = addresses.hash_addresses(pa.array(phones), addresses.PHONE)
    assert status.tolist() == [1, 1, 1, 0, 1, 0, 0, 0, 0]
    assert bytes(digests[4]) == hashlib.sha256(b"79123456789").digest()


@given(
    st.lists(st.none() | st.text(alphabet=ASCII, max_size=20), max_size=30),
    st.sampled_from(["email", "phone"]),
)
def test_kernel_matches_python_on_ascii(values: list[str | None], kind: str) -> None:
    status, digests = addresses.hash_addresses(
        pa.array(values, pa.string()), KIND[kind]
    )
    for got_status, digest, want in zip(
        status.tolist(), digests, oracle(values, kind), strict=True
    ):
        assert got_status != addresses.NEEDS_PYTHON  # ASCII, short
        if want is None:
            assert got_status == addresses.NO_VALUE
        else:
            assert got_status == addresses.HASHED and bytes(digest) == want


@given(
    st.lists(
        st.none()
        | st.text(alphabet=st.sampled_from(ASCII + ODD), max_size=20)
        | st.text(max_size=300),
        max_size=20,
    ),
    st.sampled_from(["email", "phone"]),
)
def test_address_digests_match_python_on_any_text(values, kind: str) -> None:
    present, digests = address_digests(pa.array(values, pa.large_string()), kind)
    for ok, digest, want in zip(present, digests, oracle(values, kind), strict=True):
        assert ok == (want is not None)
        if want is not None:
            assert bytes(digest) == want


def test_sliced_and_chunked_input() -> None:
    values = pa.array(["a@b", "C@D", None, "e@f"])
    status, digests = addresses.hash_addresses(values.slice(1, 3), addresses.EMAIL)
    assert status.tolist() == [1, 0, 1]
    assert bytes(digests[0]) == hashlib.sha256(b"c@d").digest()
    chunked = pa.chunked_array([values.slice(0, 2), values.slice(2)])
    status, _ = addresses.hash_addresses(chunked, addresses.EMAIL)
    assert status.tolist() == [1, 1, 0, 1]
    assert np.all(addresses.hash_addresses(pa.array([], pa.string()), 0)[0] == [])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kind"):
        addresses.hash_addresses(pa.array(["x"]), 7)
    with pytest.raises(TypeError, match="string"):
        addresses.hash_addresses(pa.array([1]), addresses.PHONE)
    with pytest.raises(ValueError, match="default_country"):
        addresses.hash_addresses(pa.array(["x"]), addresses.PHONE, "7a")
