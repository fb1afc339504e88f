"""``json.loads`` with a nesting bound, for bodies from outside (signed webhooks).

The standard decoder recurses once per level: a body of 100,000 ``[`` raised
``RecursionError``, which is no ``ValueError``, so the receiver's "not JSON" check let it
through as a 500 that failed every POST of the same group commit. Deeper than
:data:`MAX_DEPTH` levels is refused as a ``ValueError`` here (no platform body nests beyond
about ten), whether the decoder got that far or not.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64


class TooDeep(ValueError):
    pass


def loads(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The decoded document; ``ValueError`` when it is not JSON or nests too deep."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise TooDeep(f"nested deeper than {max_depth} levels") from None
    opening = raw.count(b"[") + raw.count(b"{")
    if opening > max_depth and depth(doc) > max_depth:  # few brackets: cannot nest that deep
        raise TooDeep(f"nested deeper than {max_depth} levels")
    return doc


def depth(doc: Any) -> int:
    """Levels of arrays and objects (a scalar is 0), counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in children)
    return deepest
