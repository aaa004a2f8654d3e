"""Normalisation of contact addresses before they are matched, linked or hashed.

Identity links (`email`, `phone`) match on the normalised value, and the retargeting
export hashes the same normalised value, because ad platforms (Meta, Google, VK, Yandex)
match SHA-256 hashes of exactly this form: a lower-cased trimmed email, and a phone as
E.164 digits (country code first, no ``+``, no separators). One place, so a value that
links two contacts also hashes the same way. The rules are documented in
docs/data-model.md ("Identity").
"""

from __future__ import annotations

import hashlib
import re

# Russian national numbers are written 8XXXXXXXXXX (trunk prefix 8) or as ten digits
# without a prefix; both mean +7 XXXXXXXXXX. Other countries must be written with their
# code (a leading + or 00).
DEFAULT_COUNTRY_CODE = "7"
_NOT_DIGIT = re.compile(r"\D")
_PHONE_CHARS = re.compile(r"^[+0-9 ()\-.]*$")


def normalize_email(value: str) -> str | None:
    """Trim and lower-case; None when it is not an address (no single ``@`` with text on
    both sides, or whitespace inside)."""
    email = value.strip().lower()
    local, at, domain = email.partition("@")
    if (
        not at
        or not local
        or not domain
        or "@" in domain
        or any(c.isspace() for c in email)
    ):
        return None
    return email


def normalize_phone(
    value: str, default_country: str = DEFAULT_COUNTRY_CODE
) -> str | None:
    """E.164 digits (no ``+``): ``+7 (912) 345-67-89`` -> ``79123456789``.

    A leading ``+`` or ``00`` means the country code follows; an 11-digit number starting
    with 8 and a 10-digit number are national numbers of `default_country`. None when the
    value has other characters than digits, spaces, ``+()-.``, or the result is not 8-15
    digits (E.164 allows at most 15)."""
    text = value.strip()
    if not text or not _PHONE_CHARS.match(text) or "+" in text[1:]:
        return None
    digits = _NOT_DIGIT.sub("", text)
    if text.startswith("+"):
        pass
    elif digits.startswith("00"):
        digits = digits[2:]
    elif len(digits) == 11 and digits.startswith("8") and default_country == "7":
        digits = "7" + digits[1:]
    elif len(digits) == 10:
        digits = default_country + digits
    if not 8 <= len(digits) <= 15 or digits.startswith("0"):
        return None
    return digits


def sha256_hex(normalized: str) -> str:
    """The lowercase hex SHA-256 of a normalised value (what ad platforms upload)."""
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()
