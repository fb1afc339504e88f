"""ISO 639-3 language codes: the options of the reserved ``language`` profile field (seed 004).

The list is ``pycountry``'s copy of the ISO 639-3 code table (it tracks the registration
authority's tables through Debian's iso-codes): 7,900-odd individual, macro, special
(``MIS``, ``MUL``, ``UND``, ``ZXX``) and ancient languages, each with a three-letter code
and an English name. Values are upper case (``ENG``), as an ENUM value must be and as the
seed shows them. pycountry reads its JSON database on first use; the set is built once per
process.
"""

from __future__ import annotations

from functools import cache

import pycountry


@cache
def iso_639_3() -> dict[str, str]:
    """Code (upper case) -> English name, in code order."""
    pairs = ((str(lang.alpha_3).upper(), str(lang.name)) for lang in pycountry.languages)
    return dict(sorted(pairs))


def is_language(code: str) -> bool:
    return code in iso_639_3()
