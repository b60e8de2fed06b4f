"""The temporary directory that multipart uploads over 1 MB spill to (Starlette's spooled files): when it is full,
the upload is refused as the server's fault (503 with Retry-After, one ERROR line naming the directory) and
``/readyz`` says so until there is room for one upload again. Raw-body uploads, and multipart ones that stay in
memory, never touch it."""

from __future__ import annotations

import errno
import logging
import shutil
import tempfile
from dataclasses import dataclass

log = logging.getLogger("wbvae")

STORAGE_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # no space, over quota, over the file limit


def storage_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it was raised from) is a write that failed for want of space."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in STORAGE_FULL:
            return True
        exc = exc.__cause__
    return False


@dataclass
class TempStorage:
    """Whether the temporary directory ran out of space, and until when it counts as full: until it has
    ``room_bytes`` free (one upload) again."""

    room_bytes: int
    path: str = ""
    full: bool = False

    def __post_init__(self) -> None:
        self.path = self.path or tempfile.gettempdir()

    def failed(self, exc: OSError) -> None:
        """A write to it failed for want of space; logged once per episode."""
        if not self.full:
            log.error(
                "temporary storage full: %s in %s (TMPDIR), spilling a multipart upload to disk; multipart uploads "
                "over 1 MB get 503 until it has %d bytes free",
                exc,
                self.path,
                self.room_bytes,
            )
        self.full = True

    def free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.path).free
        except OSError:
            return 0

    def still_full(self) -> bool:
        """Whether it is full now: once it ran out, until it has room for one upload again."""
        if self.full and self.free_bytes() >= self.room_bytes:
            log.warning("temporary storage %s has room again (%d bytes free)", self.path, self.free_bytes())
            self.full = False
        return self.full
