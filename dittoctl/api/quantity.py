"""Kubernetes resource quantities (the subset the API needs: compare and test positivity)."""

from __future__ import annotations

import re
from decimal import Decimal, DecimalException

_SUFFIX = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"),
    "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
}
_LARGEST = Decimal(2) ** 63 - 1  # Kubernetes and DittoFS both hold a quantity in an int64
_FORM = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$")


def parse_quantity(text: str) -> Decimal:
    """Value of a quantity such as `5Gi`, `500M` or `1e3`; ValueError names the expected form."""
    match = _FORM.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 1Gi, 500Mi, 10G)")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        # "E" and "Ei" are exa and exbi; only "e"/"E" followed by digits is an exponent.
        value = Decimal(number) * _SUFFIX[suffix] if suffix in _SUFFIX else Decimal(number + suffix)
    except DecimalException as exc:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 1Gi, 500Mi, 10G)") from exc
    # Checked before anyone turns it into an int: 1e999999999 would take minutes (and no size exceeds int64).
    if value.copy_abs() > _LARGEST:
        raise ValueError(f"{text!r} is too large: a quantity must be below 8Ei")
    return value
