"""rstscope.collector: the cyclic collector off inside the block, as it was after (also on errors)."""

from __future__ import annotations

import gc

import pytest

from rstscope import collector


@pytest.mark.parametrize("enabled", [True, False])
def test_paused_then_as_it_was(enabled):
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(KeyError), collector.paused():
            assert not gc.isenabled()
            raise KeyError("an error inside the block")
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
