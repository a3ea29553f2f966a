"""Turn a guest list, an email or an image into a network's input tensor.

Training and the service both import this package, so a model is fed in serving exactly what it
was fed in training (no train/serve skew). It depends on numpy, Pillow and the standard library
only: the service must run without torch. One module per model kind; this module is the import
path both sides use.
"""

from service.features.digit import (
    MNIST_BOX,
    MNIST_SIZE,
    PixelBudget,
    decode_base64_image,
    image_bytes_to_digit,
    image_to_gray,
    normalise_digit,
    open_image,
    pixel_grid,
    pixels_to_digit,
    pixels_to_digits,
)
from service.features.errors import FeatureError, ImageTooLargeError, UnknownGuestError
from service.features.spam import BagOfWords, TokenIds, email_text, email_tokens, html_to_text, tokenize
from service.features.wine import GuestEncoder

__all__ = [
    "MNIST_BOX",
    "MNIST_SIZE",
    "BagOfWords",
    "FeatureError",
    "GuestEncoder",
    "ImageTooLargeError",
    "PixelBudget",
    "TokenIds",
    "UnknownGuestError",
    "decode_base64_image",
    "email_text",
    "email_tokens",
    "html_to_text",
    "image_bytes_to_digit",
    "image_to_gray",
    "normalise_digit",
    "open_image",
    "pixel_grid",
    "pixels_to_digit",
    "pixels_to_digits",
    "tokenize",
]
