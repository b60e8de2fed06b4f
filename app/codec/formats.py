"""The output formats: one registry that the encoder, the route, the CLI and the web page read.

Adding a format is one entry here (plus Pillow support for it): its media type, file suffixes,
the longest side it can store, whether it takes a quality, and the names clients may use.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OutputFormat:
    """One output format."""

    name: str  # canonical name, as in ``?format=``
    label: str  # what the web page shows
    media_type: str
    suffixes: tuple[str, ...]  # file suffixes, the first one written
    max_side: int  # longest side the format can store, px
    lossy: bool  # takes a ``quality``
    aliases: tuple[str, ...] = field(default=())


FORMATS: dict[str, OutputFormat] = {
    f.name: f
    for f in (
        OutputFormat("png", "PNG (lossless)", "image/png", (".png",), 2**31 - 1, lossy=False),
        OutputFormat("jpeg", "JPEG", "image/jpeg", (".jpg", ".jpeg", ".jpe"), 65535, lossy=True, aliases=("jpg",)),
        OutputFormat("webp", "WebP", "image/webp", (".webp",), 16383, lossy=True),
    )
}
DEFAULT_FORMAT = "png"
_BY_NAME = {alias: f for f in FORMATS.values() for alias in (f.name, *f.aliases)}
_BY_MEDIA_TYPE = {f.media_type: f for f in FORMATS.values()} | {"image/jpg": FORMATS["jpeg"]}


def output_format(name: str) -> OutputFormat:
    """The format called ``name`` (case-insensitive, aliases such as ``jpg`` included); ValueError if none."""
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown output format {name!r}; choose one of {', '.join(FORMATS)}") from None


def format_for_media_type(media_type: str) -> OutputFormat | None:
    """The format an ``Accept`` media type names (``image/*`` and ``*/*``: the default), else None."""
    media_type = media_type.strip().lower()
    if media_type in ("image/*", "*/*"):
        return FORMATS[DEFAULT_FORMAT]
    return _BY_MEDIA_TYPE.get(media_type)


def format_for_suffix(suffix: str) -> OutputFormat:
    """The format that keeps a file's own format (``.jpg`` -> JPEG); formats we cannot write -> PNG."""
    return next((f for f in FORMATS.values() if suffix.lower() in f.suffixes), FORMATS[DEFAULT_FORMAT])


def check_output_size(fmt: OutputFormat, width: int, height: int) -> None:
    """``OutputTooLarge`` if a ``width`` x ``height`` photo cannot be written as ``fmt``."""
    if max(width, height) > fmt.max_side:
        raise OutputTooLarge(
            f"{fmt.name.upper()} output holds at most {fmt.max_side} px per side and this photo "
            f"is {width}x{height}; ask for format=png"
        )


class OutputTooLarge(ValueError):
    """Wider or taller than the requested output format can store (HTTP 422)."""
