"""Printed digits: 0-9 rendered from the fonts of two Debian packages, as PNGs a user would upload.

A photo of a form, a price tag or a screen shows printed digits, which no MNIST writer drew. The
digit card measures them, never trains on them: each is rendered by Pillow into a PNG, in several
sizes and both polarities, and read back through the service's own upload path
(service.features.image_bytes_to_digit), so the figure is what the endpoint would answer.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from training.data import DataError

FONT_ROOT = Path("/usr/share/fonts/truetype")
FONT_PACKAGES: dict[str, tuple[str, ...]] = {
    "fonts-dejavu-core": tuple(
        f"dejavu/DejaVu{family}{weight}.ttf"
        for family in ("Sans", "Serif", "SansMono")
        for weight in ("", "-Bold")
    ),
    "fonts-liberation": tuple(
        f"liberation/Liberation{family}-{style}.ttf"
        for family in ("Sans", "SansNarrow", "Serif", "Mono")
        for style in ("Regular", "Bold", "Italic", "BoldItalic")
    ),
}
SIZES = (12, 16, 24, 40, 64)
"""Font sizes in pixels: 12 is small screen text, 64 a close-up photo."""
POLARITIES = ("dark_on_light", "light_on_dark")


@dataclass(frozen=True)
class RenderedDigit:
    font: str  # the file name without .ttf, e.g. "LiberationSerif-Italic"
    size: int
    polarity: str
    label: int
    png: bytes


def font_files(root: Path = FONT_ROOT) -> list[Path]:
    """The fonts the evaluation renders, all of them or a DataError naming what to install."""
    missing = {
        package: [name for name in names if not (root / name).is_file()]
        for package, names in FONT_PACKAGES.items()
    }
    absent = sorted(package for package, names in missing.items() if names)
    if absent:
        raise DataError(
            f"the digit card's printed-digit evaluation needs the fonts of the Debian packages "
            f"{', '.join(absent)} under {root} (missing e.g. {missing[absent[0]][0]}); install "
            f"them with `apt-get install -y {' '.join(FONT_PACKAGES)}`"
        )
    return [root / name for names in FONT_PACKAGES.values() for name in names]


def render_png(font: Path, digit: int, size: int, polarity: str) -> bytes:
    """One digit centred on a canvas twice the font size, antialiased, as PNG bytes."""
    ink, paper = (0, 255) if polarity == "dark_on_light" else (255, 0)
    canvas = Image.new("L", (2 * size, 2 * size), paper)
    ImageDraw.Draw(canvas).text(
        (size, size), str(digit), fill=ink, font=ImageFont.truetype(str(font), size), anchor="mm"
    )
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def rendered_digits(root: Path = FONT_ROOT) -> list[RenderedDigit]:
    """Every digit in every font, size and polarity."""
    return [
        RenderedDigit(font.stem, size, polarity, digit, render_png(font, digit, size, polarity))
        for font in font_files(root)
        for size in SIZES
        for polarity in POLARITIES
        for digit in range(10)
    ]
