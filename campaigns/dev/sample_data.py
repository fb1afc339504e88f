"""Deterministic contact lists in the formats operators really upload (demo, bench, tests)."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

import phonenumbers

# region -> (example mobile number's national digits, how many trailing digits we vary)
_REGIONS = ("DE", "GB", "FR", "ES", "IT", "NL", "US", "BR", "IN", "MX", "PL", "AT")
_FIRST_NAMES = ("Anna", "Jonas", "Lea", "Mateo", "Sofia", "Liam", "Élodie", "Søren", "Zoë", "Ana")


def _mobile_template(region: str) -> tuple[int, str]:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    assert example.country_code is not None
    return example.country_code, str(example.national_number)


_TEMPLATES = {region: _mobile_template(region) for region in _REGIONS}


def _valid_number(region: str, serial: int) -> tuple[int, str]:
    """The region's example mobile with its last digits replaced by the serial: unique per row."""
    country_code, national = _TEMPLATES[region]
    width = min(6, len(national) - 4)
    tail = f"{serial % 10**width:0{width}d}"
    return country_code, national[:-width] + tail


def _format(rng: random.Random, region: str, country_code: int, national: str, home: str) -> str:
    """One of the shapes seen in real exports: E.164, spaced, dashed, 00-prefixed, lost +, tel:."""
    style = rng.randrange(8)
    if style == 0:
        return f"+{country_code}{national}"
    if style == 1:
        return f"+{country_code} {national[:3]} {national[3:6]} {national[6:]}"
    if style == 2:
        return f"00{country_code}-{national[:3]}-{national[3:]}"
    if style == 3:
        return f"{country_code}{national}"  # a spreadsheet ate the "+"
    if style == 4:
        return f"tel:+{country_code}{national}"
    if style == 5:
        return f" +{country_code} ({national[:3]}) {national[3:]} "
    if region == home:
        prefix = "0" if region not in ("US", "MX", "IN") else ""
        return f"{prefix}{national[:3]} {national[3:]}"  # national format of the campaign's region
    return f"+{country_code}.{national[:4]}.{national[4:]}"


_BAD_VALUES = ("", "n/a", "12345", "+49 abc", "call me", "0000", "+999 1234567")


def generate_rows(
    count: int,
    *,
    seed: int = 7,
    home_region: str = "DE",
    bad_share: float = 0.05,
    duplicate_share: float = 0.01,
) -> Iterator[tuple[str, str, str]]:
    """(phone, first_name, code) rows; ``bad_share`` unparsable/invalid, some duplicates."""
    rng = random.Random(seed)
    recent: list[str] = []
    for serial in range(count):
        roll = rng.random()
        if roll < bad_share:
            phone = rng.choice(_BAD_VALUES)
        elif roll < bad_share + duplicate_share and recent:
            phone = rng.choice(recent)
        else:
            region = home_region if rng.random() < 0.5 else rng.choice(_REGIONS)
            country_code, national = _valid_number(region, serial)
            phone = _format(rng, region, country_code, national, home_region)
            if len(recent) < 1000:
                recent.append(phone)
        yield phone, rng.choice(_FIRST_NAMES), f"BF{serial:07d}"


def write_csv(path: Path, count: int, *, seed: int = 7, home_region: str = "DE") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("phone", "first_name", "code"))
        writer.writerows(generate_rows(count, seed=seed, home_region=home_region))
    return path


EXAMPLE_CSV = Path(__file__).parent / "examples" / "contacts-10k.csv"
