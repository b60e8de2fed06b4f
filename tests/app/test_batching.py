"""Micro-batching of the model forward (app/batcher.py): batches form, results do not change."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from app.batcher import ModelBatcher, batching_wanted
from app.main import create_app
from app.settings import Settings
from bench.server import start_server
from model.corrector import Corrector
from model.stats import analyse
from tests import photos
from tests.conftest import wait_client_ready, wild_photos


def small_jpegs() -> list[bytes]:
    """The wild photos at about 0.3 MP: different photos, so a mix-up between batch members would show."""
    out = []
    for path in wild_photos():
        im = Image.open(path).convert("RGB")
        im.thumbnail((700, 700))
        out.append(photos.save(im, "JPEG"))
    return out


class FakeCorrector:
    """Records batch sizes; the 'analysis' is the photo and the 'matrix' the analysis itself, so results can be
    traced to requests."""

    def __init__(self, fail=None):
        self.sizes, self.fail = [], fail

    def analyse(self, photo):
        return photo

    def estimate_batch(self, analyses):
        self.sizes.append(len(analyses))
        if self.fail:
            raise self.fail
        return list(analyses)


def test_batches_form_while_requests_are_still_decoding_and_results_go_back_to_their_owner():
    fake = FakeCorrector()
    batcher = ModelBatcher(fake, max_size=8, max_wait_s=2.0)
    start = threading.Barrier(4)

    def request(i):
        with batcher.expect():
            start.wait()
            time.sleep(0.02 * i)  # "decoding", staggered
            return batcher.estimate(f"photo {i}")

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(request, range(4))) == [f"photo {i}" for i in range(4)]
    assert max(fake.sizes) > 1 and sum(fake.sizes) == 4
    batcher.close()


def test_a_lone_request_does_not_wait_and_batches_are_capped():
    fake = FakeCorrector()
    max_wait_s = 5.0
    batcher = ModelBatcher(fake, max_size=2, max_wait_s=max_wait_s)
    start = time.monotonic()
    with batcher.expect():
        assert batcher.estimate("alone") == "alone"
    assert time.monotonic() - start < max_wait_s / 2  # nobody else was decoding: it did not wait for the others
    with ThreadPoolExecutor(5) as pool:
        assert sorted(pool.map(batcher.estimate, "abcde")) == list("abcde")
    assert max(fake.sizes) <= 2
    batcher.close()


def test_an_error_in_a_forward_reaches_every_request_of_its_batch():
    batcher = ModelBatcher(FakeCorrector(fail=torch.OutOfMemoryError("CUDA out of memory")), 8, 0.5)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(batcher.estimate, i) for i in range(3)]
        for f in futures:
            with pytest.raises(torch.OutOfMemoryError):
                f.result()
    batcher.close()


def test_batching_is_on_for_cuda_only_by_default():
    assert batching_wanted("auto", torch.device("cuda")) and not batching_wanted("auto", torch.device("cpu"))
    assert batching_wanted("on", torch.device("cpu")) and not batching_wanted("off", torch.device("cuda"))


def test_a_photos_correction_does_not_depend_on_its_batch():
    corrector = Corrector.from_checkpoint(device="cpu")
    analyses = [analyse(np.asarray(Image.open(p).convert("RGB").reduce(2))) for p in wild_photos()]
    alone = [corrector.estimate_batch([a])[0].matrix for a in analyses]
    together = corrector.estimate_batch(analyses[::-1])[::-1]
    assert all(np.array_equal(a, t.matrix) for a, t in zip(alone, together))


def batch_sizes(metrics_text: str) -> tuple[float, float]:
    """(forwards, forwards of more than one photo) from the wbvae_model_batch_size histogram."""
    family = next(f for f in text_string_to_metric_families(metrics_text) if f.name == "wbvae_model_batch_size")
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    count = samples[("wbvae_model_batch_size_count", None)]
    return count, count - samples[("wbvae_model_batch_size_bucket", "1.0")]


@pytest.mark.slow
def test_concurrent_requests_over_http_share_forwards_and_get_the_unbatched_results():
    uploads = small_jpegs()
    with TestClient(create_app(Settings(batch="off"))) as plain:  # the reference: no batcher at all
        wait_client_ready(plain)
        want = [plain.post("/correct", files={"file": ("p.jpg", data)}).content for data in uploads]
        assert batch_sizes(plain.get("/metrics").text) == (0, 0)
    with (
        start_server(
            WBVAE_BATCH="on", WBVAE_MAX_CONCURRENT_CORRECTIONS=str(len(uploads)), WBVAE_BATCH_MAX_WAIT_MS="1000"
        ) as server,
        httpx.Client(timeout=60) as client,
    ):

        def post(data):
            r = client.post(f"{server.url}/correct", files={"file": ("p.jpg", data)})
            assert r.status_code == 200
            return r.content

        for _ in range(5):  # a round whose requests all got past HTTP parsing in time forms a batch
            with ThreadPoolExecutor(len(uploads)) as pool:
                got = list(pool.map(post, uploads))
            assert got == want  # bit for bit, whatever the batch
            forwards, batched = batch_sizes(client.get(f"{server.url}/metrics").text)
            if batched:
                break
        assert batched >= 1 and forwards < 5 * len(uploads), (forwards, batched)


def test_gpu_out_of_memory_in_a_batched_forward_is_503_and_the_service_recovers(monkeypatch):
    png = photos.save(Image.new("RGB", (64, 64), (120, 90, 60)), "PNG")
    with TestClient(create_app(Settings(batch="on"))) as c:
        wait_client_ready(c)
        assert c.app.state.batcher is not None

        def oom(analyses):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        monkeypatch.setattr(c.app.state.corrector, "estimate_batch", oom)
        r = c.post("/correct", files={"file": ("a.png", png)})
        assert r.status_code == 503 and "out of memory" in r.json()["detail"] and r.headers["retry-after"]
        monkeypatch.undo()
        assert c.post("/correct", files={"file": ("a.png", png)}).status_code == 200
