"""Turn a guest list, an email or an image into a network's input tensor.

Training and the service both import this module, so a model is fed in serving exactly what it
was fed in training (no train/serve skew). It depends on numpy, Pillow and the standard library
only: the service must run without torch.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.header
import email.message
import email.policy
import html.parser
import io
import re
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

MNIST_SIZE = 28
MNIST_BOX = 20


class FeatureError(ValueError):
    """Input that cannot be turned into a tensor; the service answers it with a 4xx."""


class UnknownGuestError(FeatureError):
    def __init__(self, unknown: Sequence[str], roster: Sequence[str]) -> None:
        self.unknown = list(unknown)
        self.roster = list(roster)
        super().__init__(
            f"unknown guest(s) {', '.join(map(repr, self.unknown))}; "
            f"known guests: {', '.join(self.roster)}"
        )


class ImageTooLargeError(FeatureError):
    """An image whose declared size exceeds the limit: refused before its pixels are decoded."""


# ----------------------------------------------------------------------------- wine


class GuestEncoder:
    """Encodes a guest list as a presence vector over the model's roster, case-insensitively.

    The lookup table is built once per model so that encoding a request is a dict lookup per guest.
    """

    def __init__(self, roster: Sequence[str]) -> None:
        self.roster = list(roster)
        self._index = {name.casefold(): i for i, name in enumerate(self.roster)}
        if len(self._index) != len(self.roster):
            raise ValueError(f"roster has names that differ only by case: {self.roster}")

    def canonical(self, guests: Iterable[str]) -> list[str]:
        """The roster's spelling of each guest; raises UnknownGuestError naming every stranger."""
        indices = self._indices(guests)
        return [self.roster[i] for i in indices]

    def encode(self, guests: Iterable[str]) -> np.ndarray:
        vector = np.zeros(len(self.roster), dtype=np.float32)
        vector[self._indices(guests)] = 1.0
        return vector

    def _indices(self, guests: Iterable[str]) -> list[int]:
        indices: list[int] = []
        unknown: list[str] = []
        for guest in guests:
            i = self._index.get(guest.strip().casefold())
            if i is None:
                unknown.append(guest)
            else:
                indices.append(i)
        if unknown:
            raise UnknownGuestError(unknown, self.roster)
        return indices


# ----------------------------------------------------------------------------- spam

_TOKEN = re.compile(r"[a-z0-9]+(?:['.][a-z0-9]+)*|[$!%]")
_HEADER_LINE = re.compile(r"^[!-9;-~]+:[ \t]", re.ASCII)
_FALLBACK_CHARSET = "latin-1"


class _HTMLText(html.parser.HTMLParser):
    """Collects the visible text of an HTML part; style and script contents are dropped."""

    _INVISIBLE = {"script", "style", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._INVISIBLE:
            self._hidden_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._INVISIBLE and self._hidden_depth:
            self._hidden_depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth:
            self.chunks.append(data)


def html_to_text(markup: str) -> str:
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    return " ".join(parser.chunks)


def _decode_part(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or _FALLBACK_CHARSET
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode(_FALLBACK_CHARSET, errors="replace")


def email_text(raw: str | bytes) -> str:
    """The words a reader sees: the subject plus every text/plain and text/html part.

    Accepts a raw RFC 822 message (with headers) or just a body. Broken charsets and transfer
    encodings are tolerated rather than refused, because spam is often malformed on purpose.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    first_line = raw.lstrip(b"\r\n").split(b"\n", 1)[0].decode("latin-1")
    if not _HEADER_LINE.match(first_line) and not first_line.startswith("From "):
        return raw.decode("utf-8", errors="replace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    chunks = [_header_text(message.get("Subject", ""))]
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "text/plain":
            chunks.append(_decode_part(part))
        elif content_type == "text/html":
            chunks.append(html_to_text(_decode_part(part)))
    return "\n".join(chunks)


def _header_text(value: object) -> str:
    try:
        parts = email.header.decode_header(str(value))
    except (ValueError, LookupError):
        return str(value)
    text = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            try:
                chunk = chunk.decode(charset or _FALLBACK_CHARSET, errors="replace")
            except LookupError:
                chunk = chunk.decode(_FALLBACK_CHARSET, errors="replace")
        text.append(chunk)
    return " ".join(text)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def email_tokens(raw: str | bytes) -> set[str]:
    """The distinct tokens of an email: the bag of words is binary, so counts do not matter."""
    return set(tokenize(email_text(raw)))


class BagOfWords:
    """Binary bag of words over a fixed vocabulary (the model card's), index built once."""

    def __init__(self, vocabulary: Sequence[str]) -> None:
        self.vocabulary = list(vocabulary)
        self._index = {token: i for i, token in enumerate(self.vocabulary)}

    def encode(self, raw: str | bytes) -> np.ndarray:
        vector = np.zeros(len(self.vocabulary), dtype=np.float32)
        hits = [self._index[t] for t in email_tokens(raw) if t in self._index]
        vector[hits] = 1.0
        return vector


# ----------------------------------------------------------------------------- digit


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


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Opens PNG or JPEG bytes, refusing an image larger than max_pixels before decoding it.

    Image.open reads only the header, so a 20000x20000 bomb in a tiny file costs nothing.
    """
    try:
        image = Image.open(io.BytesIO(data), formats=("PNG", "JPEG"))
    except Image.DecompressionBombError as exc:  # Pillow's own, far higher, limit
        raise ImageTooLargeError(f"image is over the limit of {max_pixels} pixels: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise FeatureError("the bytes are not a PNG or JPEG image") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
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
            return alpha * luma + (1.0 - alpha) * background
        return luma
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def normalise_digit(gray: np.ndarray) -> np.ndarray:
    """MNIST-style normalisation of any grayscale digit image, as float32 28x28 in [0, 1].

    Light digit on dark (inverting when the border is light), ink stretched to [0, 1], cropped to
    the ink, longer side scaled to 20 px keeping the aspect ratio, pasted into 28x28 with its
    centre of mass at the centre. A blank image comes back all zeros.
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or gray.size == 0:
        raise FeatureError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    if not np.isfinite(gray).all():
        raise FeatureError("image values must be finite numbers")
    border = np.sort(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]))
    background = float(border[len(border) // 2])  # the median, without np.median's overhead
    if background > 0.5:
        gray = 1.0 - gray
        background = 1.0 - background
    ink = np.clip(gray - background, 0.0, None)
    peak = float(ink.max())
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    if peak <= 1e-6:
        return out
    ink /= peak
    rows = np.flatnonzero(ink.max(axis=1) > 0.05)
    cols = np.flatnonzero(ink.max(axis=0) > 0.05)
    ink = np.ascontiguousarray(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    height, width = ink.shape
    scale = MNIST_BOX / max(height, width)
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    resized = Image.fromarray(ink).resize((new_w, new_h), Image.Resampling.LANCZOS)
    box = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    rows_mass, cols_mass = box.sum(axis=1), box.sum(axis=0)
    mass = float(rows_mass.sum())
    centre_y = float(rows_mass @ np.arange(new_h)) / mass if mass > 0 else new_h / 2
    centre_x = float(cols_mass @ np.arange(new_w)) / mass if mass > 0 else new_w / 2
    top = int(round(MNIST_SIZE / 2 - 0.5 - centre_y))
    left = int(round(MNIST_SIZE / 2 - 0.5 - centre_x))
    top = min(max(top, 0), MNIST_SIZE - new_h)
    left = min(max(left, 0), MNIST_SIZE - new_w)
    out[top : top + new_h, left : left + new_w] = box
    return out


def image_bytes_to_digit(data: bytes, max_pixels: int) -> np.ndarray:
    return normalise_digit(image_to_gray(open_image(data, max_pixels)))


def pixels_to_digit(pixels: np.ndarray) -> np.ndarray:
    """784 values or 28x28 in [0, 1], light on dark, through the same normalisation as images."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.size != MNIST_SIZE * MNIST_SIZE:
        raise FeatureError(f"expected 784 pixels (28x28), got {pixels.size}")
    if not np.isfinite(pixels).all() or pixels.min() < 0.0 or pixels.max() > 1.0:
        raise FeatureError("pixel values must be numbers in [0, 1]")
    return normalise_digit(pixels.reshape(MNIST_SIZE, MNIST_SIZE))
