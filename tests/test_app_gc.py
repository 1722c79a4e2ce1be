"""The hub's process settles the cyclic garbage collector and the GIL switch interval once it has started
(issue #16)."""

from __future__ import annotations

import gc
import sys

import pytest

from outboxhub import app


def test_settle_gc_freezes_start_up_state_and_collects_the_young_generation_less_often() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    try:
        app._settle_gc()
        assert gc.get_freeze_count() > frozen
        assert gc.get_threshold() == (app._GC_YOUNG_THRESHOLD, before[1], before[2])
        assert before[0] < app._GC_YOUNG_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_settle_gil_hands_the_gil_over_sooner_than_cpython_does() -> None:
    before = sys.getswitchinterval()
    try:
        app._settle_gil()
        assert sys.getswitchinterval() == pytest.approx(app._GIL_SWITCH_INTERVAL_S)
        assert before > app._GIL_SWITCH_INTERVAL_S
    finally:
        sys.setswitchinterval(before)
