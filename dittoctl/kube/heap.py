"""Handing freed heap memory back to the operating system.

After a burst, glibc keeps the memory Python freed in its heap for reuse: 15 MiB of RSS after 300 new
servers (bench, issue 15), never used again by a settled operator. ``malloc_trim`` returns it. Large blocks
(a listing page's parse) are kept out of the heap altogether, so they cannot leave it fragmented.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's own default, pinned


def _libc() -> ctypes.CDLL:
    # The process's own symbols, the C library's among them. ctypes.util.find_library runs `ldconfig -p` in a
    # subprocess: ~2 ms of a start, twice.
    return ctypes.CDLL(None)


def pin_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at its default, so every block above it is mapped and goes back to the OS
    when freed. glibc otherwise raises the threshold (up to 32 MiB) each time a mapped block is freed; a
    listing page's buffers then come from the heap and fragment it (~5 MiB more RSS after a trim in a trial).
    False on a C library without ``mallopt``."""
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def trimmer() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, or None on a C library without it (musl, macOS)."""
    try:
        trim = _libc().malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release
