"""Inline images: decoded off the event loop, paid for from a pixel budget, within the request's deadline."""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from lepton_ai.serve.batching import Overloaded
from lepton_ai.serve.images import ImageReader, PixelBudget
from lepton_ai.serve.model import model_photon


def png(width: int, height: int) -> str:
    """Return an all-black PNG of width×height, base64-encoded (16 kB at 4096×4096)."""
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def blocked(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Image decoding waits until the returned event is set: a decode as long as the test wants."""
    release, pixels = threading.Event(), ImageReader._pixels

    def slow(self: ImageReader, i: int, image: Image.Image):
        release.wait(30)
        return pixels(self, i, image)

    monkeypatch.setattr(ImageReader, "_pixels", slow)
    yield release
    release.set()


def test_the_event_loop_answers_while_an_image_decodes(
    serve, digits_ref: str, blocked: threading.Event
) -> None:
    with serve(model_photon(digits_ref)) as url, ThreadPoolExecutor(1) as pool:
        # a 16 kB body: small enough that its JSON is parsed on the event loop
        image = pool.submit(httpx.post, f"{url}/predict", json={"inputs": [png(4096, 4096)]}, timeout=30)
        for _ in range(5):
            assert httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            numbers = httpx.post(f"{url}/predict", json={"inputs": [[0.0] * 64]}, timeout=2)
            assert numbers.status_code == 200
        assert not image.done()
        blocked.set()
        assert image.result().status_code == 200


def test_the_deadline_counts_the_decoding(serve, digits_ref: str, blocked: threading.Event) -> None:
    with serve(model_photon(digits_ref), timeout_s=0.3) as url:
        r = httpx.post(f"{url}/predict", json={"inputs": [png(64, 64)]}, timeout=10)
        assert r.status_code == 504 and r.json()["error"] == "timeout"
        blocked.set()
        assert httpx.post(f"{url}/predict", json={"inputs": [[0.0] * 64]}).status_code == 200


def test_images_over_the_budget_are_refused_with_retry_later(serve, digits_ref: str) -> None:
    photon = model_photon(digits_ref)
    assert photon.images is not None
    # room for one 4096² image a second
    photon.images.budget = PixelBudget(1.5 * 4096 * 4096)
    big = png(4096, 4096)
    with serve(photon) as url:
        first = httpx.post(f"{url}/predict", json={"inputs": [big]}, timeout=30)
        second = httpx.post(f"{url}/predict", json={"inputs": [big]}, timeout=30)
        too_many = httpx.post(f"{url}/predict", json={"inputs": [png(2048, 2048)] * 7}, timeout=30)
        # small images still fit in what is left
        small = httpx.post(f"{url}/predict", json={"inputs": [png(8, 8)]}, timeout=30)
    assert first.status_code == 200
    assert (
        second.status_code == 503 and second.headers["retry-after"] and "Mpixel/s" in second.json()["message"]
    )
    assert too_many.status_code == 422 and "per request" in too_many.json()["message"]
    assert small.status_code == 200


def test_the_budget_refills_with_time_and_takes_nothing_it_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("lepton_ai.serve.images.time.monotonic", lambda: now[0])
    budget = PixelBudget(1000)
    budget.charge(800)
    with pytest.raises(Overloaded):
        budget.charge(300)
    # the refused charge took nothing
    budget.charge(200)
    now[0] += 0.5
    budget.charge(500)
    now[0] += 10
    # never more than one second's worth
    budget.charge(1000)
    with pytest.raises(Overloaded):
        budget.charge(1)


def test_a_jpeg_is_decoded_and_paid_for_at_the_scale_the_model_needs() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (255, 255, 255)).save(buf, format="JPEG")
    reader = ImageReader((3, 32, 32), 1.0, pixels_per_s=1e6)
    # 12 Mpixel at full scale: over the per-request budget unless drafted to 1/8
    arr = reader.decode([base64.b64encode(buf.getvalue()).decode()], lambda i, x: x)
    assert arr.shape == (1, 3, 32, 32) and arr.min() > 0.95
    assert reader.budget.left < 1e6 - 500 * 375 + 1
