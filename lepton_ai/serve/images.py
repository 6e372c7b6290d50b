"""Images sent inline (base64), decoded off the event loop and within a budget.

A 4096×4096 all-zero PNG is 16 kB on the wire and a tenth of a second of a core to decode: decoded on the
event loop, a few a second stall every connection, health checks included. Here images are decoded on a
thread of their own, after their headers are read and their pixels paid for: at most `pixels_per_s` a second
(a request over the budget waits for no one: 503, retry later) and no more than that in one request. JPEGs
are decoded straight at the smallest scale that still covers the model's input (`Image.draft`), and paid for
at that scale."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from lepton_ai.errors import InvalidInputError
from lepton_ai.serve.batching import Overloaded

# one image: a decompression bomb is refused from its header
MAX_PIXELS = 4096 * 4096
# about a third of a core's PNG decoding: what images may take from the model, per worker
PIXELS_PER_S = 64 * 1024 * 1024


class PixelBudget:
    """A token bucket of pixels: refilled at `per_s` a second, holding at most one second's worth."""

    def __init__(self, per_s: float) -> None:
        self.per_s, self.left, self._at = per_s, per_s, time.monotonic()
        self._lock = threading.Lock()

    def charge(self, pixels: int) -> None:
        """Take `pixels` from the budget, or raise Overloaded (nothing taken) if there are not that many."""
        with self._lock:
            now = time.monotonic()
            self.left = min(self.per_s, self.left + (now - self._at) * self.per_s)
            self._at = now
            if pixels > self.left:
                raise Overloaded(f"decoding images: over {self.per_s / 1e6:.0f} Mpixel/s; retry later")
            self.left -= pixels


class ImageReader:
    """Reads base64-encoded images as float32 arrays of a model's input size (C, H, W) and pixel range."""

    def __init__(
        self,
        input_size: tuple[int, ...],
        pixel_max: float,
        pixels_per_s: float = PIXELS_PER_S,
        threads: int = 1,
    ) -> None:
        self.channels, self.height, self.width = input_size
        self.mode = "L" if self.channels == 1 else "RGB"
        self.scale = pixel_max / 255.0
        self.budget = PixelBudget(pixels_per_s)
        # its threads start with the first image
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="lepton-images")

    async def decode_off_loop(self, inputs: list[Any], other: Callable[[int, Any], np.ndarray]) -> np.ndarray:
        """Return `decode(inputs, other)`, computed on the reader's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.decode, inputs, other)

    def decode(self, inputs: list[Any], other: Callable[[int, Any], np.ndarray]) -> np.ndarray:
        """Return the examples as one array (N, C, H, W): the images' headers read and their pixels paid for
        first, then the images decoded; an example that is not a string is `other(i, example)`."""
        opened: dict[int, Image.Image] = {}
        try:
            for i, example in enumerate(inputs):
                if isinstance(example, str):
                    opened[i] = self._open(i, example)
            self._pay(sum(image.width * image.height for image in opened.values()))
            return np.stack(
                [self._pixels(i, opened[i]) if i in opened else other(i, x) for i, x in enumerate(inputs)]
            )
        finally:
            for image in opened.values():
                image.close()

    def _pay(self, pixels: int) -> None:
        if pixels > self.budget.per_s:
            raise InvalidInputError(
                f"inputs: the images hold {pixels:,} pixels; at most {int(self.budget.per_s):,} per request"
            )
        self.budget.charge(pixels)

    def _open(self, i: int, text: str) -> Image.Image:
        """Return the image in `text` with only its header read, drafted to the smallest scale that covers the
        model's input; refuse one over MAX_PIXELS before decoding."""
        try:
            raw = base64.b64decode(
                text.split(",", 1)[-1] if text.startswith("data:") else text, validate=True
            )
            image = Image.open(io.BytesIO(raw))
        except UnidentifiedImageError:
            raise InvalidInputError(f"inputs[{i}]: not a base64-encoded image (of no format known)") from None
        except (binascii.Error, ValueError, OSError) as e:
            raise InvalidInputError(f"inputs[{i}]: not a base64-encoded image ({e})") from None
        if image.width * image.height > MAX_PIXELS:
            image.close()
            raise InvalidInputError(
                f"inputs[{i}]: a {image.width}×{image.height} image is over the {MAX_PIXELS:,}-pixel limit"
            )
        # JPEG only: decoded at 1/2, 1/4 or 1/8 of its size where that still covers the input
        image.draft(self.mode, (self.width, self.height))
        return image

    def _pixels(self, i: int, image: Image.Image) -> np.ndarray:
        try:
            pixels = np.asarray(image.convert(self.mode).resize((self.width, self.height)), dtype=np.float32)
        except (ValueError, OSError, Image.DecompressionBombError) as e:
            # a header that promised an image its data does not hold
            raise InvalidInputError(f"inputs[{i}]: not a base64-encoded image ({e})") from None
        pixels *= self.scale
        return pixels[None] if self.channels == 1 else pixels.transpose(2, 0, 1)
