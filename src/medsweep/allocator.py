"""glibc's allocator told to keep freed memory for reuse (``trainer.keep_freed_memory``).

By default glibc hands large freed blocks back to the operating system at once: an allocation
above its mmap threshold is unmapped when freed, and free memory at the top of the heap above the
trim threshold is given back. A training step allocates and frees the same large activation and
gradient tensors every step, so each step pays again for fresh pages: the kernel zeroes every
4 KiB page at its first touch (on ResNet-18 at 32 px, batch 64, on a 2-core CPU: about 8,000 page
faults per step and 10-20 % of the step's time). Raising both thresholds keeps those blocks in the
process for the next step, which is what the allocators PyTorch recommends for CPU training
(jemalloc, tcmalloc) do anyway. Memory freed by a run is then reused by the process rather than
returned to the system; the peak is unchanged.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# blocks up to glibc's largest mmap threshold (32 MiB on 64-bit) come from the heap; up to 1 GiB of
# free heap is kept; the heap grows 64 MiB at a time
SETTINGS = {M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 2**30, M_TOP_PAD: 64 * 2**20}


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):  # musl and others: no gnu_get_libc_version
        return None
    version.restype = ctypes.c_char_p
    return libc if version() else None


def keep_freed_memory() -> bool:
    """Set glibc's thresholds (``SETTINGS``) for this process; False where that is not possible.

    Process-wide and for the rest of the process: a later run in the same process keeps them.
    """
    libc = glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(libc.mallopt(param, value) == 1 for param, value in SETTINGS.items())
