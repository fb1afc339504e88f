"""campaigns.runtime.collector: the GC settings of a long-running process."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from campaigns.runtime import collector


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_settle_freezes_what_lives_and_spaces_young_collections() -> None:
    gc.unfreeze()
    survivor = [object() for _ in range(10)]  # a container alive at set-up
    collector.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, 10, 10)
    collected = [o for g in (0, 1, 2) for o in gc.get_objects(generation=g)]
    assert gc.is_tracked(survivor)
    assert all(o is not survivor for o in collected)  # frozen: in no generation any more
