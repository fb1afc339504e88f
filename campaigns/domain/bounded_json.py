"""``json.loads`` with a nesting bound, for bodies from outside (signed webhooks).

The standard decoder recurses once per level: a body of 100,000 ``[`` raised
``RecursionError``, which is no ``ValueError``, so the receiver's "not JSON" check let it
through as a 500 that failed every POST of the same group commit. Deeper than
:data:`MAX_DEPTH` levels is refused as a ``ValueError`` here (no platform body nests beyond
about ten), whether the decoder got that far or not.

The depth of a decoded document is read off its raw UTF-8 bytes (:func:`nesting`), with
bytes operations that run in C: walking the tree in Python cost more than decoding it
(~0.5 ms for a 50-status body, on the receiver's request path and in the applier).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate, count
from operator import sub
from typing import Any

MAX_DEPTH = 64

_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # a backslash and the byte it escapes
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'"[]{}')
_UP_DOWN = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_UTF8 = frozenset(("utf-8", "utf-8-sig"))


class TooDeep(ValueError):
    pass


def loads(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The decoded document; ``ValueError`` when it is not JSON or nests too deep."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise TooDeep(f"nested deeper than {max_depth} levels") from None
    opening = raw.count(b"[") + raw.count(b"{")
    if opening > max_depth and _depth(raw, doc) > max_depth:  # few brackets: not that deep
        raise TooDeep(f"nested deeper than {max_depth} levels")
    return doc


def _depth(raw: bytes, doc: Any) -> int:
    if json.detect_encoding(raw) in _UTF8:
        return nesting(bytes(raw))
    return depth(doc)  # UTF-16/32 (json.loads accepts them): bytes are not characters


def nesting(raw: bytes) -> int:
    """Levels of arrays and objects of a UTF-8 JSON text that :func:`json.loads` accepted.

    Escapes are dropped first (an escaped quote does not end a string), then everything but
    quotes and brackets; the pieces between quotes at odd places are string contents. What
    is left is brackets only: +1 for an opening one, -1 for a closing one, and the depth is
    the largest running sum (``accumulate`` of 2/0 minus the position).
    """
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    brackets = b"".join(raw.translate(None, _NOT_STRUCTURE).split(b'"')[::2])
    return max(map(sub, accumulate(brackets.translate(_UP_DOWN)), count(1)), default=0)


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
