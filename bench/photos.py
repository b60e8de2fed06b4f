"""Real photos (``../shared/data/wild``, or the folder ``WBVAE_BENCH_PHOTOS`` names) scaled to a given
number of megapixels, as JPEG bytes."""

from __future__ import annotations

import io
import os
from functools import cache
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
WILD = Path(os.environ.get("WBVAE_BENCH_PHOTOS") or REPO.parent / "shared" / "data" / "wild")


def source_photo() -> Path:
    photos = sorted(WILD.glob("*.jpg"))
    if not photos:
        raise SystemExit(f"reference photos missing: expected JPEGs in {WILD}")
    return photos[0]


@cache
def photo_jpeg(megapixels: float, quality: int = 92) -> bytes:
    """The first wild photo resampled (bicubic) to about ``megapixels`` MP, as a JPEG at ``quality``."""
    im = Image.open(source_photo()).convert("RGB")
    scale = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()
