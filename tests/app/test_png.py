"""The strip-parallel PNG writer (app/codec/png.py): valid, lossless and Pillow-compatible PNG files, deflated by
ISA-L; the uint8 Paeth filter equals the spec's for every (a, b, c)."""

import io
import struct
import subprocess
import sys
import zlib
from functools import partial

import numpy as np
import pytest
from PIL import Image

import app.codec.png
from app.codec import encode
from app.codec.encode import SRGB_ICC
from app.codec.png import adler32_combine, default_threads, encode_png, isal_level, map_strips
from model.mapping import apply_matrix
from model.mapping16 import apply_gray_gain
from tests.conftest import REPO

RNG = np.random.default_rng(11)
M = np.array([[1.1, 0.05, 0.0], [0.0, 0.95, 0.02], [0.01, 0.0, 0.8]], np.float32)


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, each CRC checked."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(png):
        (size,), kind = struct.unpack(">I", png[pos : pos + 4]), png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + size]
        (crc,) = struct.unpack(">I", png[pos + 8 + size : pos + 12 + size])
        assert crc == zlib.crc32(data, zlib.crc32(kind)), kind
        out.append((kind, data))
        pos += 12 + size
    assert pos == len(png) and out[-1] == (b"IEND", b"")
    return out


def check_stream(png: bytes) -> None:
    """The IDAT data is one zlib stream whose Adler-32 checks out (zlib verifies it), with nothing after it."""
    d = zlib.decompressobj()
    d.decompress(b"".join(data for kind, data in chunks(png) if kind == b"IDAT"))
    assert d.eof and not d.unused_data


def idat_rows(png: bytes, row_bytes: int) -> np.ndarray:
    """The decompressed image data: one row per image row, its filter type byte first."""
    data = zlib.decompress(b"".join(data for kind, data in chunks(png) if kind == b"IDAT"))
    return np.frombuffer(data, np.uint8).reshape(-1, 1 + row_bytes)


def pillow_png(pixels: np.ndarray, alpha: np.ndarray | None = None) -> bytes:
    """Pillow's own PNG encoder, default options, of the same pixels (modes RGB, RGBA, L, LA, I;16)."""
    im = Image.fromarray(pixels)
    if alpha is not None:
        im.putalpha(Image.fromarray(alpha))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def photo_like(h: int, w: int, channels: int | None = 3, dtype=np.uint8) -> np.ndarray:
    """Smooth gradients plus noise (compressible like a photo, and not trivially)."""
    top = np.iinfo(dtype).max
    y, x = np.mgrid[0:h, 0:w]
    base = (x * 7 + y * 3) % (top + 1)
    shape = (h, w) if channels is None else (h, w, channels)
    noise = RNG.integers(0, 9, size=shape)
    base = base if channels is None else base[..., None] * np.array([1, 2, 3])[:channels]
    return ((base + noise) % (top + 1)).astype(dtype)


SHAPES = [(1, 1), (2, 2), (1, 257), (300, 1), (37, 53), (120, 91), (5, 333)]
LAYOUTS = ["rgb", "rgba", "gray", "gray+alpha", "gray16"]


def layout_pixels(layout: str, h: int, w: int) -> tuple[np.ndarray, np.ndarray | None]:
    if layout.startswith("rgb"):
        pixels = photo_like(h, w)
    else:
        pixels = photo_like(h, w, None, np.uint16 if layout == "gray16" else np.uint8)
    return pixels, photo_like(h, w, None) if layout.endswith("a") else None


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_decodes_bit_exactly_as_pillows_own_png(shape, layout):
    """Every compress level, one strip / several / one row each: Pillow decodes our file to the very pixels
    it decodes from its own encoder's file of the same image (and to the input)."""
    pixels, alpha = layout_pixels(layout, *shape)
    theirs = np.asarray(Image.open(io.BytesIO(pillow_png(pixels, alpha))))
    for level in range(10):
        for threads, strip_bytes in ((1, 1 << 19), (3, 200), (2, 1)):
            png = encode_png(pixels, alpha, compress_level=level, threads=threads, strip_bytes=strip_bytes)
            check_stream(png)
            im = Image.open(io.BytesIO(png))
            assert im.mode == {"rgb": "RGB", "rgba": "RGBA", "gray": "L", "gray+alpha": "LA", "gray16": "I;16"}[layout]
            back = np.asarray(im)
            assert back.dtype == theirs.dtype and np.array_equal(back, theirs), (level, threads, strip_bytes)
            if alpha is not None:
                assert np.array_equal(back[..., -1], alpha)
                back = back[..., 0] if pixels.ndim == 2 else back[..., :3]
            assert back.dtype == pixels.dtype and np.array_equal(back, pixels)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("block_bytes", [1, 700])
def test_filter_blocks_and_strips_cut_anywhere(layout, block_bytes, monkeypatch):
    """Paeth blocks of one row or a few, inside strips of one row, a few, or all: same pixels, and every row
    Paeth-filtered (type 4)."""
    monkeypatch.setattr(app.codec.png, "FILTER_BLOCK_BYTES", block_bytes)
    pixels, alpha = layout_pixels(layout, 61, 47)
    row_bytes = pixels[0].nbytes + (0 if alpha is None else alpha[0].nbytes)
    for threads, strip_bytes in ((1, 1 << 19), (2, 5 * row_bytes), (2, 7 * row_bytes + 3), (3, 1)):
        png = encode_png(pixels, alpha, threads=threads, strip_bytes=strip_bytes)
        back = np.asarray(Image.open(io.BytesIO(png)))
        assert np.array_equal(back, np.asarray(Image.open(io.BytesIO(pillow_png(pixels, alpha)))))
        assert (idat_rows(png, row_bytes)[:, 0] == 4).all()


def paeth_spec(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """PNG's Paeth predictor as the specification writes it."""
    a, b, c = (v.astype(np.int32) for v in (a, b, c))
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def test_paeth_filter_matches_the_spec_for_every_a_b_c():
    """All 2^24 (left, above, above-left) byte triples, 65536 at a time: a 2-row gray image whose top row holds
    (c, b) pairs and whose bottom row (a, x) pairs; the filtered bytes are the spec's, and Pillow decodes them."""
    b, c = (v.ravel().astype(np.uint8) for v in np.meshgrid(np.arange(256), np.arange(256)))
    x = ((np.arange(b.size) * 7) % 256).astype(np.uint8)
    img = np.empty((2, 2 * b.size), np.uint8)
    img[0, 0::2], img[0, 1::2], img[1, 1::2] = c, b, x
    for a in range(256):
        img[1, 0::2] = a
        png = encode_png(img, threads=1)
        filtered = idat_rows(png, img.shape[1])[1, 1:]
        left = np.concatenate([[0], img[1, :-1]])
        above_left = np.concatenate([[0], img[0, :-1]])
        expected = (img[1].astype(np.int32) - paeth_spec(left, img[0], above_left)) % 256
        assert np.array_equal(filtered, expected), a
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), img), a


def test_levels_map_onto_isal_and_level_0_stores():
    """zlib's 0-9: 0 stores (no filter, no compression), 1-3 -> ISA-L 1, 4-6 -> 2, 7-9 -> 3."""
    assert [isal_level(level) for level in range(10)] == [None, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for bad in (-1, 10):
        with pytest.raises(ValueError, match="0-9"):
            isal_level(bad)
    pixels = photo_like(64, 80)
    stored = encode_png(pixels, compress_level=0, threads=2, strip_bytes=2000)
    assert (idat_rows(stored, 240)[:, 0] == 0).all()  # filter type None
    assert sum(len(d) for k, d in chunks(stored) if k == b"IDAT") > pixels.nbytes
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored))), pixels)
    for level in range(1, 10):
        png = encode_png(pixels, compress_level=level, threads=2, strip_bytes=2000)
        assert (idat_rows(png, 240)[:, 0] == 4).all()
        assert len(png) < 0.8 * len(stored)


def test_chunks_are_those_pillow_writes():
    """Same chunk sequence (IHDR, iCCP, eXIf, IDAT..., IEND), same header, profile and EXIF as Pillow's."""
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    exif[0x0112] = 1
    raw_exif = exif.tobytes()
    pixels = photo_like(50, 70)
    ours = encode(pixels, None, "png", exif=raw_exif)
    pillow = encode(pixels, None, "png", exif=raw_exif, png_writer="pillow")

    def squeeze(cs):
        return [c for i, c in enumerate(cs) if not (c[0] == b"IDAT" and cs[i - 1][0] == b"IDAT")]

    ours_c, pillow_c = squeeze(chunks(ours)), squeeze(chunks(pillow))
    assert [k for k, _ in ours_c] == [k for k, _ in pillow_c] == [b"IHDR", b"iCCP", b"eXIf", b"IDAT", b"IEND"]
    for (k1, d1), (_, d2) in zip(ours_c, pillow_c):
        if k1 != b"IDAT":
            assert d1 == d2, k1
    im = Image.open(io.BytesIO(ours))
    assert im.info["icc_profile"] == SRGB_ICC and im.getexif()[0x010F] == "TestCam"
    assert np.array_equal(np.asarray(im), np.asarray(Image.open(io.BytesIO(pillow))))
    gray = encode(pixels[..., 0], None, "png", exif=raw_exif)
    assert [k for k, _ in squeeze(chunks(gray))] == [b"IHDR", b"eXIf", b"IDAT", b"IEND"]  # no profile, like Pillow


def test_size_close_to_pillows():
    """Paeth on every row and ISA-L level 1: within 10 % of Pillow's adaptive filters and zlib level 1 Z_RLE
    (ISA-L trades a few per cent of size for 3-4 x zlib's speed; docs/benchmark.md has photos' figures)."""
    pixels = photo_like(200, 300)
    ours, pillow = encode(pixels, None, "png"), encode(pixels, None, "png", png_writer="pillow")
    assert len(ours) < 1.10 * len(pillow)


def test_mapping_inside_the_writer_equals_mapping_first():
    pixels = photo_like(90, 70)
    alpha = photo_like(90, 70, None)
    png = encode_png(pixels, alpha, map_rows=partial(apply_matrix, matrix=M), threads=2, strip_bytes=3000)
    assert png == encode_png(apply_matrix(pixels, M), alpha, threads=1, strip_bytes=3000)
    gray16 = photo_like(40, 30, None, np.uint16)
    png = encode_png(gray16, map_rows=partial(apply_gray_gain, gain=1.3), threads=2, strip_bytes=100)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), apply_gray_gain(gray16, 1.3))
    assert np.array_equal(
        map_strips(pixels, partial(apply_matrix, matrix=M), threads=3, strip_bytes=500), apply_matrix(pixels, M)
    )


def test_adler32_combine_matches_zlib():
    data = RNG.integers(0, 256, size=200_000, dtype=np.uint8).tobytes()
    for cut in (0, 1, 5000, 65521, 65522, 150_000, len(data)):
        a, b = data[:cut], data[cut:]
        assert adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(data)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="uint8 or uint16"):
        encode_png(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="16-bit"):
        encode_png(np.zeros((2, 2, 3), np.uint16))
    with pytest.raises(ValueError, match="alpha"):
        encode_png(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((2, 2, 4), np.uint8))


@pytest.mark.slow
def test_24_megapixel_png_of_a_mapped_photo_stays_within_memory_bound():
    """Peak RSS of a fresh process mapping and PNG-encoding a 24 MP photo: input + 2 x output + < 100 MB
    (the compressed pieces and their join, strip buffers per thread; no corrected full-size copy)."""
    code = (  # the process's own high-water mark: ru_maxrss would carry this test process's over exec
        "import numpy as np\n"
        "from functools import partial\n"
        "from bench.rss import peak_rss_mb\n"
        "from app.codec import encode\n"
        "from model.mapping import apply_matrix\n"
        "rng = np.random.default_rng(0)\n"  # a photo-like 24 MP image, built without big temporaries
        "cols, rows = (np.arange(6000) // 24 % 256).astype(np.uint8), (np.arange(4000) // 16 % 256).astype(np.uint8)\n"
        "img = np.empty((4000, 6000, 3), np.uint8)\n"
        "img[..., 0], img[..., 1], img[..., 2] = cols, rows[:, None], cols + rows[:, None]\n"
        "for r in range(0, 4000, 100):\n"
        "    img[r:r + 100] += rng.integers(0, 12, (100, 6000, 3), dtype=np.uint8)\n"
        "base = peak_rss_mb()\n"
        "png = encode(img, None, 'png', map_rows=partial(apply_matrix, matrix=np.diag([1.2, 1.0, 0.8])))\n"
        "print(int(peak_rss_mb() - base), len(png) >> 20)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO, text=True)
    extra_mb, png_mb = map(int, done.stdout.split())
    assert extra_mb < 2 * png_mb + 100, f"mapping and encoding 24 MP took {extra_mb} MB beyond the input"


def test_default_threads_follow_a_container_cpu_limit(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs
    assert default_threads(cpu_max) == min(2, default_threads(tmp_path / "missing"))
    cpu_max.write_text("max 100000\n")
    assert default_threads(cpu_max) == default_threads(tmp_path / "missing") >= 1
