"""``fedimg deface``'s allocator setting: glibc keeps freed large blocks for reuse (fewer page faults)."""

from __future__ import annotations

import platform

import pytest

from fedimg.cli.deface import freed_memory_reused


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_glibc_accepts_the_reuse_settings_and_they_are_undone():
    with freed_memory_reused() as on:
        assert on is True
        block = bytearray(64 << 20)  # a large block, freed inside
        del block
    with freed_memory_reused() as again:  # usable again after the defaults were set back (a batch, a test run)
        assert again is True
