"""Any digit image (784 pixels, PNG or JPEG of any size) as the digit network's 28x28 input."""

from __future__ import annotations

import base64
import binascii
import io
import math
from functools import lru_cache

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
    digit = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    _normalise_one(gray, noise_floor, digit)
    return digit


def _normalise(grays: np.ndarray, noise_floor: float) -> np.ndarray:
    """normalise_digit on a stack of checked, finite float32 images of one size."""
    out = np.zeros((len(grays), MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    for gray, digit in zip(grays, out, strict=True):
        _normalise_one(gray, noise_floor, digit)
    return out


def _normalise_one(gray: np.ndarray, noise_floor: float, out: np.ndarray) -> None:
    """One image's normalisation into `out` (zeros). Every digit served and every digit trained
    on passes here, and at 28x28 the overhead of a numpy call (about a microsecond) is most of
    the time, so each step is the fewest calls that compute it: one image at a time beats a
    stack's 3-D calls. Up to the crop, each value is computed as the first pipeline computed
    it, in float32, so the crop is the same; the resize and the centring are within a last bit
    of Pillow's (_resized; tests/test_preprocessing.py checks both)."""
    height, width = gray.shape
    border = np.concatenate((gray[0], gray[-1], gray[:, 0], gray[:, -1]))
    middle = len(border) // 2
    border.partition(middle)
    median = border[middle]
    floor = np.float32(0.0)
    if noise_floor:
        spread = np.abs(border - median)
        spread.partition(middle)
        floor = np.float32(noise_floor * 1.4826 * float(spread[middle]))
    if median > 0.5:  # dark on light
        gray = 1.0 - gray
        median = 1.0 - median
    if median or floor:
        ink = gray - median  # what is left above the background
        if floor:
            ink -= floor
        np.maximum(ink, 0.0, out=ink)
        peak = np.maximum.reduce(ink, axis=None)
        if not peak > 1e-6:
            return
        ink /= peak
    else:  # a clean black border (most digits): nothing to subtract, and no pixel is below 0
        peak = np.maximum.reduce(gray, axis=None)
        if not peak > 1e-6:
            return
        ink = gray / peak
    inked = ink > 0.05
    # The first and last inked pixel in row order give the rows; the columns, their own.
    by_rows, (columns,) = np.flatnonzero(inked), np.logical_or.reduce(inked, axis=0).nonzero()
    top, bottom = int(by_rows[0]) // width, int(by_rows[-1]) // width
    left, right = int(columns[0]), int(columns[-1])
    _paste_centred(ink[top : bottom + 1, left : right + 1], out)


def _paste_centred(ink: np.ndarray, out: np.ndarray) -> None:
    """The cropped ink, longer side scaled to 20 px, into `out` with its centre of mass at the centre."""
    height, width = ink.shape
    scale = MNIST_BOX / max(height, width)
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    box = _resized(ink, new_h, new_w)
    # [[mass, sum of x times mass], [sum of y times mass, -]] in two products, in double.
    moments = _MOMENTS[:, :new_h] @ box @ _MOMENTS_T[:new_w]
    mass = float(moments[0, 0])
    centre_y = float(moments[1, 0]) / mass if mass > 0 else new_h / 2
    centre_x = float(moments[0, 1]) / mass if mass > 0 else new_w / 2
    top = int(round(MNIST_SIZE / 2 - 0.5 - centre_y))
    left = int(round(MNIST_SIZE / 2 - 0.5 - centre_x))
    top = min(max(top, 0), MNIST_SIZE - new_h)
    left = min(max(left, 0), MNIST_SIZE - new_w)
    out[top : top + new_h, left : left + new_w] = box


_MOMENTS = np.stack([np.ones(MNIST_BOX), np.arange(MNIST_BOX, dtype=np.float64)])
_MOMENTS_T = _MOMENTS.T


def _resized(ink: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Pillow's LANCZOS resize of a float32 ("F") image, clipped to [0, 1], as matrix products
    in double: each output pixel a sum of input pixels times _lanczos_weights, rows then
    columns; a side whose size is unchanged is not resampled.

    Within a float32 rounding of Pillow's, not always its bits: Pillow rounds to float32
    between its two passes, resamples the columns first for some tall crops, and sums in its
    own order. tests/test_preprocessing.py holds the normalised digits within 1e-6 of the
    Pillow pipeline's."""
    height, width = ink.shape
    if new_w == width and new_h == height:
        return ink  # in [0, 1] already
    box = ink
    if new_w != width:
        box = box @ _lanczos_weights(width, new_w)
    if new_h != height:
        box = _lanczos_weights(height, new_h).T @ box
    np.minimum(box, 1.0, out=box)
    np.maximum(box, 0.0, out=box)
    return box


@lru_cache(maxsize=4096)
def _lanczos_weights(size: int, new_size: int) -> np.ndarray:
    """[size, new_size]: each input pixel's weight in each output pixel, as Pillow's
    precompute_coeffs (libImaging/Resample.c) computes them in double: a Lanczos-3 window,
    widened by the reduction factor when shrinking, centred on the output pixel, normalised to
    sum 1. Cached: a digit's crop has one of a few hundred sizes."""
    scale = size / new_size
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    step = 1.0 / filterscale
    weights = np.zeros((size, new_size))
    for column in range(new_size):
        centre = (column + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        last = min(int(centre + support + 0.5), size)
        taps = [_lanczos((x - centre + 0.5) * step) for x in range(first, last)]
        total = 0.0
        for tap in taps:  # Pillow's order: the sum's last bit is in every weight
            total += tap
        weights[first:last, column] = [tap / total for tap in taps] if total != 0.0 else taps
    weights.flags.writeable = False
    return weights


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


def _sinc(x: float) -> float:
    return 1.0 if x == 0.0 else math.sin(x * math.pi) / (x * math.pi)


def image_bytes_to_digit(data: bytes, limit: int | PixelBudget, noise_floor: float = 0.0) -> np.ndarray:
    return normalise_digit(image_to_gray(open_image(data, limit)), noise_floor)


def pixels_to_digit(pixels: np.ndarray, noise_floor: float = 0.0) -> np.ndarray:
    """784 values or 28x28 in [0, 1], light on dark, through the same normalisation as images."""
    digit = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    _normalise_one(pixel_grid(pixels), noise_floor, digit)
    return digit


def pixels_to_digits(pixels: np.ndarray, noise_floor: float = 0.0) -> np.ndarray:
    """A stack of digits, each 784 values or 28x28 in [0, 1], as pixels_to_digit gives each
    (training's and a batch's way: the range is checked once for the whole stack)."""
    return _normalise(_grids(np.asarray(pixels, dtype=np.float32)), noise_floor)


def pixel_grid(pixels: np.ndarray) -> np.ndarray:
    """One digit's 784 values or 28x28 in [0, 1], checked, as a 28x28 float32 grid."""
    grid: np.ndarray = _grids(np.asarray(pixels, dtype=np.float32).reshape(1, -1))[0]
    return grid


def _grids(pixels: np.ndarray) -> np.ndarray:
    if pixels.size != len(pixels) * MNIST_SIZE * MNIST_SIZE:
        raise FeatureError(f"expected 784 pixels (28x28), got {pixels.size // max(1, len(pixels))}")
    # Also refuses NaN; infinity is out of range.
    if not (np.minimum.reduce(pixels, axis=None) >= 0.0 and np.maximum.reduce(pixels, axis=None) <= 1.0):
        raise FeatureError("pixel values must be numbers in [0, 1]")
    return pixels.reshape(-1, MNIST_SIZE, MNIST_SIZE)
