"""Property-based fuzzing of the decode path: mutated real images never get a 5xx."""
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from app.main import create_app
from app.settings import Settings
from tests import photos
from tests.conftest import WILD


def _seeds() -> list[bytes]:
    """Small real-photo crops in every accepted container."""
    rgb = np.asarray(Image.open(sorted(WILD.glob("*.jpg"))[0]).convert("RGB"))[:48, :64]
    im = Image.fromarray(rgb)
    return [photos.save(im, "JPEG", quality=80), photos.save(im, "PNG"), photos.save(im, "WEBP"),
            photos.save(im, "TIFF"), photos.save(im, "BMP"), photos.heic(rgb),
            photos.save(im.convert("RGBA"), "PNG"), photos.rotated_jpeg(rgb)]


SEEDS = _seeds()


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(max_pixels=1_000_000, max_upload_bytes=1_000_000))) as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield c


mutation = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                                        max_size=8)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("insert"), st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=64))),
    st.tuples(st.just("delete"), st.tuples(st.integers(0, 10**6), st.integers(1, 256))),
)


def _mutate(data: bytes, kind: str, arg) -> bytes:
    buf = bytearray(data)
    if not buf:  # an earlier mutation emptied it: only insertion can add bytes
        return bytes(arg[1]) if kind == "insert" else b""
    if kind == "flip":
        for pos, value in arg:
            buf[pos % len(buf)] = value
    elif kind == "truncate":
        del buf[arg % len(buf):]
    elif kind == "insert":
        pos, extra = arg
        buf[pos % len(buf):pos % len(buf)] = extra
    else:
        pos, n = arg
        del buf[pos % len(buf):pos % len(buf) + n]
    return bytes(buf)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.sampled_from(range(len(SEEDS))), mutations=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_images_never_get_a_5xx(client, seed, mutations):
    data = SEEDS[seed]
    for kind, arg in mutations:
        data = _mutate(data, kind, arg)
    r = client.post("/correct", files={"file": ("fuzz.bin", data)})
    assert r.status_code in (200, 413, 415, 422), (r.status_code, r.text)
    if r.status_code != 200:
        assert isinstance(r.json()["detail"], str)
