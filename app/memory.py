"""Keep freed memory for the next photo instead of handing it back to the kernel (glibc only).

Every correction allocates and frees tens of megabytes (a 12 MP photo: Pillow's decoded image,
its NumPy copy, the encoder's strips). glibc returns such blocks to the kernel on ``free`` (they
are ``mmap``-ed, or trimmed off the heap top), so the next request page-faults the same amount in
again, zero-filled, at a cost measured in docs/benchmark.md. With one arena, no trimming and no ``mmap`` below
``MMAP_THRESHOLD`` the memory is reused instead: the process's RSS stays at its peak between
requests (the peak itself is no higher; it was measured lower, one arena instead of one per thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 << 20  # blocks up to 256 MB come from (and go back to) the heap
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: never trim the heap top, in effect


def retain_freed_memory() -> bool:
    """Tune glibc's allocator as above, process-wide; False where it is not glibc (nothing changed).

    Call it early, before worker threads start (threads already running keep their own arenas).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        ok = all(
            libc.mallopt(param, value) == 1
            for param, value in (
                (M_ARENA_MAX, 1),
                (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            )
        )
    except (OSError, AttributeError) as exc:
        log.warning("could not tune the allocator: %s", exc)
        return False
    return ok
