"""Handing freed heap memory back to the operating system.

After a burst, glibc keeps the memory Python freed in its heap for reuse: 15 MiB of RSS after 300 new
servers (bench, issue 15), never used again by a settled operator. ``malloc_trim`` returns it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def trimmer() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, or None on a C library without it (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release
