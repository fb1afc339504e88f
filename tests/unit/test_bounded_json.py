"""bounded_json: the depth read off the raw bytes agrees with the decoded tree's."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from campaigns.domain import bounded_json

TRICKY_STRINGS = ["[", "]]]", "{[", '"', '\\"[', "\\", "\\\\[", "\u005b", "ü[€", "\n]", ""]


def _random_doc(rng: random.Random, level: int) -> Any:
    pick = rng.random()
    if level > 12 or pick < 0.35:
        return rng.choice([1, -2.5, True, None, *TRICKY_STRINGS])
    if pick < 0.7:
        return [_random_doc(rng, level + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(TRICKY_STRINGS) + str(i): _random_doc(rng, level + 1) for i in range(3)}


@pytest.mark.parametrize("seed", range(40))
def test_nesting_of_the_bytes_is_the_depth_of_the_tree(seed: int) -> None:
    rng = random.Random(seed)
    doc = _random_doc(rng, 0)
    for ensure_ascii in (True, False):
        for separators in ((",", ":"), (", ", ": ")):
            raw = json.dumps(doc, ensure_ascii=ensure_ascii, separators=separators).encode()
            assert bounded_json.nesting(raw) == bounded_json.depth(doc)


@pytest.mark.parametrize(
    ("raw", "levels"),
    [
        (b"1", 0),
        (b'"[[["', 0),
        (b"[]", 1),
        (b'{"a": "\\"[", "b": [1, {"c": []}]}', 4),
        (b'["\\\\", ["\\\\"]]', 2),
        (b'\xef\xbb\xbf[["x"]]', 2),
    ],
)
def test_nesting_known_texts(raw: bytes, levels: int) -> None:
    assert bounded_json.nesting(raw) == levels


def test_too_deep_is_refused_also_inside_utf16() -> None:
    deep = "[" * 65 + "]" * 65
    with pytest.raises(bounded_json.TooDeep):
        bounded_json.loads(deep.encode())
    with pytest.raises(bounded_json.TooDeep):
        bounded_json.loads(deep.encode("utf-16"))
    fine = '{"a": "' + "[" * 100 + '"}'  # brackets in a string are not levels
    assert bounded_json.loads(fine.encode())["a"] == "[" * 100
    assert bounded_json.loads(fine.encode("utf-16"))["a"] == "[" * 100
    assert bounded_json.loads(b"[" * 64 + b"]" * 64) is not None


def test_a_body_the_decoder_cannot_recurse_through_is_too_deep() -> None:
    with pytest.raises(bounded_json.TooDeep):
        bounded_json.loads(b"[" * 100_000 + b"]" * 100_000)
