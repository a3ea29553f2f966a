"""Foreign digits made from MNIST ones: the pens, scanners, cameras and canvases of other sources.

One implementation serves training (random mixtures of these transforms augment the training
split) and the digit card (each transform alone, on the held-out split), so the card measures the
very distortions training used. Every transform takes raw digits as the npm package stores them,
[N, 28, 28] float32 in [0, 1] with light ink on a dark background, and returns the same shape and
range: the distortion happens to the image a user would send, before the service's own
normalisation, so the net learns what the service actually feeds it.

numpy only, batched: resizing and blurring are matrix products, warps are one bilinear gather, so
a whole training split is transformed in seconds on two cores.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]

SIZE = 28
CENTRE = (SIZE - 1) / 2
PEN_UPSCALE = 4  # pens are redrawn at 4x, so a stroke can change by a quarter of a pixel
LOW_RESOLUTIONS = (8, 16)
_GRID_Y, _GRID_X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def _batched(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or images.shape[1:] != (SIZE, SIZE):
        raise ValueError(f"expected raw digits [N, {SIZE}, {SIZE}], got {images.shape}")
    return images


def _finish(images: np.ndarray) -> np.ndarray:
    clipped: np.ndarray = np.clip(images, 0.0, 1.0).astype(np.float32)
    return clipped


def _separable(images: np.ndarray, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
    """rows @ image @ cols.T for every image: a resize or blur along both axes in one product."""
    cols = rows if cols is None else cols
    product: np.ndarray = rows @ images @ np.swapaxes(cols, -1, -2)
    return product


def _area_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Each output pixel averages the input pixels it covers: how a sensor or a downscale sees."""
    edges_in = np.arange(size_in + 1) / size_in
    edges_out = np.arange(size_out + 1) / size_out
    low = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    high = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    overlap = np.clip(high - low, 0.0, None)
    matrix: np.ndarray = (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)
    return matrix


def _linear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Bilinear interpolation between pixel centres, edges clamped: a smooth upscale."""
    position = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    weight = position - low
    matrix = np.zeros((size_out, size_in), dtype=np.float32)
    matrix[np.arange(size_out), low] += 1 - weight
    matrix[np.arange(size_out), high] += weight
    return matrix


def _nearest_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Nearest-neighbour upscale: the blocky look of a small image shown large."""
    source = np.minimum((np.arange(size_out) * size_in) // size_out, size_in - 1)
    matrix = np.zeros((size_out, size_in), dtype=np.float32)
    matrix[np.arange(size_out), source] = 1.0
    return matrix


def _gaussian_matrices(sigmas: np.ndarray, size: int = SIZE) -> np.ndarray:
    """One row-normalised Gaussian smoothing matrix per sigma, [N, size, size]."""
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    kernels = np.exp(-(offsets[None] ** 2) / (2 * np.asarray(sigmas, np.float32)[:, None, None] ** 2))
    matrices: np.ndarray = (kernels / kernels.sum(axis=2, keepdims=True)).astype(np.float32)
    return matrices


def _warp(images: np.ndarray, source_y: np.ndarray, source_x: np.ndarray) -> np.ndarray:
    """Each output pixel read bilinearly from its image at (source_y, source_x); outside the
    image is background."""
    count = len(images)
    padded = np.pad(images, ((0, 0), (1, 2), (1, 2)))
    y = np.clip(source_y, -1.0, SIZE) + 1.0
    x = np.clip(source_x, -1.0, SIZE) + 1.0
    y0, x0 = np.floor(y).astype(np.intp), np.floor(x).astype(np.intp)
    wy, wx = (y - y0).astype(np.float32), (x - x0).astype(np.float32)
    batch = np.arange(count)[:, None, None]
    top = padded[batch, y0, x0] * (1 - wx) + padded[batch, y0, x0 + 1] * wx
    bottom = padded[batch, y0 + 1, x0] * (1 - wx) + padded[batch, y0 + 1, x0 + 1] * wx
    sampled: np.ndarray = top * (1 - wy) + bottom * wy
    return sampled


def _affine(images: np.ndarray, inverse: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """Warps each image by an affine map about the centre, given as the inverse 2x2 matrix
    (output -> source, [N, 2, 2] over (y, x)) and an output shift in pixels ([N, 2])."""
    shift = np.zeros((len(images), 2), np.float32) if shift is None else shift
    dy = _GRID_Y[None] - CENTRE - shift[:, 0, None, None]
    dx = _GRID_X[None] - CENTRE - shift[:, 1, None, None]
    source_y = inverse[:, 0, 0, None, None] * dy + inverse[:, 0, 1, None, None] * dx + CENTRE
    source_x = inverse[:, 1, 0, None, None] * dy + inverse[:, 1, 1, None, None] * dx + CENTRE
    return _warp(images, source_y, source_x)


def _grey_morphology(images: np.ndarray, radius: int, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """Square grey dilation (reduce=np.maximum) or erosion (np.minimum) of the given radius,
    separably: rows, then columns."""
    if radius == 0:
        return images
    pad = ((0, 0), (radius, radius), (radius, radius))
    padded = np.pad(images, pad, mode="edge")
    height, width = images.shape[1:]
    rows = padded[:, 0:height, :]
    for offset in range(1, 2 * radius + 1):
        rows = reduce(rows, padded[:, offset : offset + height, :])
    out = rows[:, :, 0:width]
    for offset in range(1, 2 * radius + 1):
        out = reduce(out, rows[:, :, offset : offset + width])
    return out


def _redraw_pen(images: np.ndarray, radii: np.ndarray, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """Redraws the strokes with a thinner or bolder pen: upscaled 4x, grey eroded or dilated
    by the radius (in 4x pixels), area-averaged back. Images sharing a radius go together."""
    up = _linear_matrix(SIZE, SIZE * PEN_UPSCALE)
    down = _area_matrix(SIZE * PEN_UPSCALE, SIZE)
    out = np.empty_like(images)
    for radius in np.unique(radii):
        chosen = np.flatnonzero(radii == radius)
        for start in range(0, len(chosen), 512):
            rows = chosen[start : start + 512]
            large = _grey_morphology(_separable(images[rows], up), int(radius), reduce)
            out[rows] = _separable(large, down)
    return out


def thin_pen(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fine pen or a big canvas scaled down: strokes a half to one pixel thinner on each side,
    and fainter where the stroke was narrow."""
    images = _batched(images)
    return _finish(_redraw_pen(images, rng.integers(2, 5, len(images)), np.minimum))


def bold_pen(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A marker: strokes a half to two pixels bolder on each side, closing small loops as real
    markers do."""
    images = _batched(images)
    return _finish(_redraw_pen(images, rng.integers(2, 9, len(images)), np.maximum))


def blur(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Out of focus: a Gaussian blur of sigma 0.7 to 1.5 pixels."""
    images = _batched(images)
    kernels = _gaussian_matrices(rng.uniform(0.7, 1.5, len(images)))
    return _finish(_separable(images, kernels))


def low_resolution(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A tiny image or a distant camera: area-averaged down to 8 to 16 pixels square, then
    scaled back to 28 either smoothly or blockily."""
    images = _batched(images)
    sizes = rng.integers(LOW_RESOLUTIONS[0], LOW_RESOLUTIONS[1] + 1, len(images))
    blocky = rng.random(len(images)) < 0.5
    out = np.empty_like(images)
    for size in np.unique(sizes):
        down = _area_matrix(SIZE, int(size))
        for nearest in (False, True):
            rows = np.flatnonzero((sizes == size) & (blocky == nearest))
            up = (_nearest_matrix if nearest else _linear_matrix)(int(size), SIZE)
            out[rows] = _separable(_separable(images[rows], down), up)
    return _finish(out)


def rotation(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A tilted page or camera: rotated by up to 20 degrees either way."""
    images = _batched(images)
    angle = np.deg2rad(rng.uniform(-20, 20, len(images))).astype(np.float32)
    cos, sin = np.cos(angle), np.sin(angle)
    inverse = np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1)
    return _finish(_affine(images, inverse))


def shear(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slanted handwriting: a horizontal shear of up to 0.4 (about 22 degrees of slant)."""
    images = _batched(images)
    factor = rng.uniform(-0.4, 0.4, len(images)).astype(np.float32)
    ones, zeros = np.ones_like(factor), np.zeros_like(factor)
    inverse = np.stack([np.stack([ones, zeros], 1), np.stack([factor, ones], 1)], 1)
    return _finish(_affine(images, inverse))


def elastic(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another hand's wobble: Simard et al.'s elastic distortion, random displacements smoothed
    by a Gaussian of sigma 4 and scaled by 24 to 36 pixels."""
    images = _batched(images)
    count = len(images)
    smooth = _gaussian_matrices(np.full(count, 4.0))
    strength = rng.uniform(24, 36, (count, 1, 1)).astype(np.float32)
    fields = rng.uniform(-1, 1, (2, count, SIZE, SIZE)).astype(np.float32)
    dy, dx = (_separable(field, smooth) * strength for field in fields)
    return _finish(_warp(images, _GRID_Y[None] + dy, _GRID_X[None] + dx))


def noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor grain: Gaussian noise of standard deviation 0.04 to 0.16 on every pixel."""
    images = _batched(images)
    sigma = rng.uniform(0.04, 0.16, (len(images), 1, 1)).astype(np.float32)
    return _finish(images + rng.standard_normal(images.shape, dtype=np.float32) * sigma)


def off_centre(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small digit anywhere on the canvas: ink shrunk to 50-100% and moved up to the edge,
    so the normalisation has to find it and scale it up from fewer pixels."""
    images = _batched(images)
    count = len(images)
    scale = rng.uniform(0.5, 1.0, count).astype(np.float32)
    room = 0.9 * (SIZE - 20 * scale) / 2
    shift = (rng.uniform(-1, 1, (count, 2)) * room[:, None]).astype(np.float32)
    inverse = np.eye(2, dtype=np.float32)[None] / scale[:, None, None]
    return _finish(_affine(images, inverse, shift))


def inverted(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark ink on light paper, as most photos and scans are."""
    return _finish(1.0 - _batched(images))


FOREIGN: dict[str, Transform] = {
    "thin_pen": thin_pen,
    "bold_pen": bold_pen,
    "blur": blur,
    "low_resolution": low_resolution,
    "rotation": rotation,
    "shear": shear,
    "elastic": elastic,
    "noise": noise,
    "off_centre": off_centre,
    "inverted": inverted,
}
"""Each foreign transform, in the order a mixture applies them: pen, then geometry, then the
camera (resolution, focus, grain), then polarity."""


def foreign_mix(images: np.ndarray, rng: np.random.Generator, max_transforms: int = 2) -> np.ndarray:
    """Training augmentation: each digit gets 0 to max_transforms foreign transforms drawn at
    random (besides polarity, which is a coin toss), applied in FOREIGN's order."""
    images = _batched(images).copy()
    count = len(images)
    kinds = [name for name in FOREIGN if name != "inverted"]
    how_many = rng.integers(0, max_transforms + 1, count)
    chosen = np.argsort(rng.random((count, len(kinds))), axis=1) < how_many[:, None]
    chosen = np.concatenate([chosen, rng.random((count, 1)) < 0.5], axis=1)
    for column, name in enumerate([*kinds, "inverted"]):
        rows = np.flatnonzero(chosen[:, column])
        if len(rows):
            images[rows] = FOREIGN[name](images[rows], rng)
    return images


def noisy_photos(images: np.ndarray, rng: np.random.Generator, dark_on_light: bool = True) -> list[bytes]:
    """Phone photos of the digits, as JPEG bytes: each digit 56 px tall at a random place on
    paper three times its size, faint sensor noise (sigma 0.03) over all of it, quality 70.

    An evaluation, not a training transform: the service's normalisation crops to every pixel
    brighter than 5% of the ink, which such noise is, so the crop keeps the whole canvas and
    the net receives a digit a few pixels tall that no training can recover.
    """
    digit, canvas = 2 * SIZE, 6 * SIZE
    large = _separable(_batched(images), _linear_matrix(SIZE, digit))
    photos = []
    for ink in large:
        page = np.zeros((canvas, canvas), dtype=np.float32)
        top, left = rng.integers(0, canvas - digit + 1, 2)
        page[top : top + digit, left : left + digit] = ink
        light = 0.1 + 0.8 * page + rng.normal(0.0, 0.03, page.shape)
        gray = 1.0 - light if dark_on_light else light
        buffer = io.BytesIO()
        Image.fromarray((np.clip(gray, 0, 1) * 255).round().astype(np.uint8)).save(
            buffer, format="JPEG", quality=70
        )
        photos.append(buffer.getvalue())
    return photos
