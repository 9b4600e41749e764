"""``fedimg deface``'s allocator setting: glibc keeps freed large blocks for reuse (fewer page faults)."""

from __future__ import annotations

import platform

import pytest

from fedimg.cli.deface import keep_freed_memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_glibc_accepts_the_reuse_settings():
    assert keep_freed_memory() is True
