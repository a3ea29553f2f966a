"""Any digit image (784 pixels, PNG or JPEG of any size) as the digit network's 28x28 input."""

from __future__ import annotations

import base64
import binascii
import io
import math

import numpy as np
from PIL import Image, ImageOps

from service.features.errors import FeatureError, ImageTooLargeError

MNIST_SIZE = 28
MNIST_BOX = 20


def decode_base64_image(value: str, max_bytes: int) -> bytes:
    """The bytes of a base64 image, plain or as a data: URL (what a canvas's toDataURL gives)."""
    if value.startswith("data:"):
        header, comma, value = value.partition(",")
        if not comma or not header.endswith(";base64"):
            raise FeatureError("a data: URL image must be base64 encoded (data:image/png;base64,...)")
    value = "".join(value.split())
    if len(value) * 3 // 4 > max_bytes:
        raise ImageTooLargeError(f"image is over the limit of {max_bytes} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: characters outside ASCII
        raise FeatureError(f"image is not valid base64: {exc}") from exc


class PixelBudget:
    """The pixels one request may decode: each image is charged from its header, before its
    pixels are decoded, against a per-image limit and a limit for all the request's images, so
    neither one huge image nor a batch of large ones costs more decoding than the limits allow.

    An image is charged the square of its longer side, not its area: decoding also costs per
    row, and 256 strips of 16x1024 cost more than four 1024x1024 images of the same area. For the
    near-square images digits come in, the two are the same."""

    def __init__(self, per_image: int, per_request: int | None = None) -> None:
        self.per_image = per_image
        self.per_request = per_request
        self.spent = 0

    def charge(self, width: int, height: int) -> None:
        charged = max(width, height) ** 2
        if charged > self.per_image:
            side = math.isqrt(self.per_image)
            raise ImageTooLargeError(f"image is {width}x{height} pixels; the limit is {side}x{side}")
        if self.per_request is not None and self.spent + charged > self.per_request:
            raise ImageTooLargeError(
                f"the request's images add up to over {self.per_request} pixels, the limit per request "
                "(each image counts as the square of its longer side)"
            )
        self.spent += charged


def open_image(data: bytes, limit: int | PixelBudget) -> Image.Image:
    """Opens PNG or JPEG bytes, refusing an image over the limit (a pixel count per image, or a
    request's budget) before decoding it.

    Image.open reads only the header, so a 20000x20000 bomb in a tiny file costs nothing.
    """
    budget = limit if isinstance(limit, PixelBudget) else PixelBudget(limit)
    try:
        image = Image.open(io.BytesIO(data), formats=("PNG", "JPEG"))
    except Image.DecompressionBombError as exc:  # Pillow's own, far higher, limit
        raise ImageTooLargeError(f"image is over the limit of {budget.per_image} pixels: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise FeatureError("the bytes are not a PNG or JPEG image") from exc
    budget.charge(*image.size)
    try:
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise FeatureError(f"the image could not be decoded: {exc}") from exc
    return image


def image_to_gray(image: Image.Image) -> np.ndarray:
    """Grayscale in [0, 1]; a transparent canvas is flattened onto a background that contrasts
    with its strokes, so dark strokes on transparency do not vanish into black."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        luma = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
        if alpha.min() < 1.0:
            inked = alpha > 0.5
            stroke = float(luma[inked].mean()) if inked.any() else 0.0
            background = 0.0 if stroke > 0.5 else 1.0
            flattened: np.ndarray = alpha * luma + (1.0 - alpha) * background
            return flattened
        return luma
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def normalise_digit(gray: np.ndarray, noise_floor: float = 0.0) -> np.ndarray:
    """MNIST-style normalisation of any grayscale digit image, as float32 28x28 in [0, 1].

    Light digit on dark (inverting when the border is light), ink stretched to [0, 1], cropped to
    the ink, longer side scaled to 20 px keeping the aspect ratio, pasted into 28x28 with its
    centre of mass at the centre. A blank image comes back all zeros.

    `noise_floor` (the card's): a photo's sensor noise lifts every pixel of a page a little above
    the background, so the crop to "any ink" kept the whole page and shrank the digit to a few
    pixels. Subtracting that many robust spreads of the border (1.4826 x its median absolute
    deviation) leaves the strokes only; a clean image's border has no spread, so it is unchanged.
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or gray.size == 0:
        raise FeatureError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    if not np.isfinite(gray).all():
        raise FeatureError("image values must be finite numbers")
    digit: np.ndarray = _normalise(gray[np.newaxis], noise_floor)[0]
    return digit


def _normalise(grays: np.ndarray, noise_floor: float) -> np.ndarray:
    """normalise_digit on a stack of checked, finite float32 images of one size. Every digit
    served and every digit trained on passes here, so its cost is per image, and at 28x28 the
    overhead of a numpy call is most of its time: what can be is done for the whole stack at
    once (border statistics, polarity, noise floor, ink, its peak and its extent, one call each),
    what cannot (the crop's resize, its centre of mass) per image. Each value is computed as
    the one-image steps computed it, in float32 where they did, so the answer is bit for bit
    the same whatever the stack's size (tests/test_preprocessing.py pins the bits)."""
    count, height, width = grays.shape
    border = np.concatenate((grays[:, 0], grays[:, -1], grays[:, :, 0], grays[:, :, -1]), axis=1)
    middle = border.shape[1] // 2
    median = np.partition(border, middle, axis=1)[:, middle]  # as np.sort()[:, middle]
    floor = None
    if noise_floor:
        deviation = np.partition(np.abs(border - median[:, None]), middle, axis=1)[:, middle]
        floor = (noise_floor * 1.4826 * deviation.astype(np.float64)).astype(np.float32)
    dark_on_light = median > 0.5
    if dark_on_light.any():
        grays = np.where(dark_on_light[:, None, None], 1.0 - grays, grays)
        median = np.where(dark_on_light, 1.0 - median, median)
    ink = grays - median[:, None, None]  # what is left above the background
    if floor is not None:
        ink -= floor[:, None, None]
    np.maximum(ink, 0.0, out=ink)
    peaks = ink.max(axis=(1, 2))
    inked = peaks > 1e-6
    np.divide(ink, peaks[:, None, None], out=ink, where=inked[:, None, None])
    rows_inked = ink.max(axis=2) > 0.05
    cols_inked = ink.max(axis=1) > 0.05
    out = np.zeros((count, MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    for index in np.flatnonzero(inked).tolist():
        (rows,), (cols,) = rows_inked[index].nonzero(), cols_inked[index].nonzero()
        crop = np.ascontiguousarray(ink[index, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        _paste_centred(crop, out[index])
    return out


def _paste_centred(ink: np.ndarray, out: np.ndarray) -> None:
    """The cropped ink, longer side scaled to 20 px, into `out` with its centre of mass at the centre."""
    height, width = ink.shape
    scale = MNIST_BOX / max(height, width)
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    # Image.frombuffer on the float32 bytes: what Image.fromarray does, without its checks.
    image = Image.frombuffer("F", (width, height), ink, "raw", "F", 0, 1)
    resized = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    box = np.frombuffer(resized.tobytes(), dtype=np.float32).reshape(new_h, new_w).clip(0.0, 1.0)
    rows_mass, cols_mass = box.sum(axis=1), box.sum(axis=0)
    mass = float(rows_mass.sum())
    centre_y = float(rows_mass @ _POSITIONS[:new_h]) / mass if mass > 0 else new_h / 2
    centre_x = float(cols_mass @ _POSITIONS[:new_w]) / mass if mass > 0 else new_w / 2
    top = int(round(MNIST_SIZE / 2 - 0.5 - centre_y))
    left = int(round(MNIST_SIZE / 2 - 0.5 - centre_x))
    top = min(max(top, 0), MNIST_SIZE - new_h)
    left = min(max(left, 0), MNIST_SIZE - new_w)
    out[top : top + new_h, left : left + new_w] = box


_POSITIONS = np.arange(MNIST_BOX)


def image_bytes_to_digit(data: bytes, limit: int | PixelBudget, noise_floor: float = 0.0) -> np.ndarray:
    return normalise_digit(image_to_gray(open_image(data, limit)), noise_floor)


def pixels_to_digit(pixels: np.ndarray, noise_floor: float = 0.0) -> np.ndarray:
    """784 values or 28x28 in [0, 1], light on dark, through the same normalisation as images."""
    digit: np.ndarray = _normalise(pixel_grid(pixels)[np.newaxis], noise_floor)[0]
    return digit


def pixels_to_digits(pixels: np.ndarray, noise_floor: float = 0.0) -> np.ndarray:
    """A stack of digits, each 784 values or 28x28 in [0, 1], as pixels_to_digit gives each, in
    a few calls for the whole stack (training's and a batch's way)."""
    return _normalise(_grids(np.asarray(pixels, dtype=np.float32)), noise_floor)


def pixel_grid(pixels: np.ndarray) -> np.ndarray:
    """One digit's 784 values or 28x28 in [0, 1], checked, as a 28x28 float32 grid."""
    grid: np.ndarray = _grids(np.asarray(pixels, dtype=np.float32)[np.newaxis])[0]
    return grid


def _grids(pixels: np.ndarray) -> np.ndarray:
    if pixels.size != len(pixels) * MNIST_SIZE * MNIST_SIZE:
        raise FeatureError(f"expected 784 pixels (28x28), got {pixels.size // max(1, len(pixels))}")
    if not (pixels.min() >= 0.0 and pixels.max() <= 1.0):  # also refuses NaN; infinity is out of range
        raise FeatureError("pixel values must be numbers in [0, 1]")
    return pixels.reshape(-1, MNIST_SIZE, MNIST_SIZE)
