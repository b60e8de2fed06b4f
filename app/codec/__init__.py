"""The image codec: upload bytes -> pixels (``decode`` after the up-front checks of ``limits``), pixels -> bytes
(``encode``, with ``png``'s parallel writer), and the output formats' registry (``formats``).

Everything outside the codec imports from here.
"""

from app.codec.decode import ACCEPTED_NAMES, DecodedImage, decode
from app.codec.encode import encode
from app.codec.formats import (
    DEFAULT_FORMAT,
    FORMATS,
    OutputFormat,
    OutputTooLarge,
    check_output_size,
    format_for_media_type,
    format_for_suffix,
    output_format,
)
from app.codec.limits import CorruptImage, ImageTooLarge, UnsupportedImage

__all__ = [
    "ACCEPTED_NAMES",
    "DEFAULT_FORMAT",
    "FORMATS",
    "CorruptImage",
    "DecodedImage",
    "ImageTooLarge",
    "OutputFormat",
    "OutputTooLarge",
    "UnsupportedImage",
    "check_output_size",
    "decode",
    "encode",
    "format_for_media_type",
    "format_for_suffix",
    "output_format",
]
