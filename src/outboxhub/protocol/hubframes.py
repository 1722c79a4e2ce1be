"""The hub's reading of client text frames: a long ``PUBLISH`` keeps its payload as the JSON text it came in.

:func:`~outboxhub.protocol.codec.decode_client_frame` builds the payload as Python values, and the store
encodes them again (``store/codec.prepare``): two passes over every payload, the second one the costlier
for numbers. Here a frame of :data:`RAW_FROM` characters or more is decoded with the payload left as a
:class:`msgspec.Raw` span of the frame, which ``prepare`` writes as it is, once that span is known to be
what the typed decoder would have accepted:

* a JSON string: msgspec checks a skipped string's escapes and control characters as when it builds a
  ``str``, and the frame is a ``str`` (a WebSocket text message, valid UTF-8): nothing more to check;
* anything else: decoded once more on its own (number range, nesting), the value then dropped.

Any doubt (a frame or payload that fails either check) goes back to ``decode_client_frame``, which accepts
or refuses the frame exactly as before, with the same error. A kept span is the client's own JSON text:
readers get the same values back (``store/codec.decode_event``), not the same bytes (whitespace, escapes
and number spellings are kept as sent; a repeated object key still reads as its last value).

Short frames take ``decode_client_frame`` directly: for ~100-byte payloads building the values is as cheap
as keeping the span (docs/benchmarks.md, eleventh round).
"""

from __future__ import annotations

from typing import Final

import msgspec

from outboxhub.protocol.codec import (
    MAX_FRAME_SIZE,
    Ack,
    Auth,
    ClientFrame,
    Extend,
    Nack,
    Publish,
    Subscribe,
    Unsubscribe,
    check_frame_size,
    decode_client_frame,
)
from outboxhub.protocol.limits import check_depth

__all__ = ["RAW_FROM", "RawPublish", "decode_hub_frame"]

RAW_FROM: Final = 1024
"""Frames of at least this many characters keep a PUBLISH payload as its JSON text."""

_QUOTE: Final = 0x22


class RawPublish(Publish, frozen=True, kw_only=True, tag="PUBLISH"):
    """A ``PUBLISH`` whose ``payload`` is its JSON text, checked (see the module's docstring)."""

    payload: msgspec.Raw = msgspec.Raw(b"null")


_hub_decoder: Final[msgspec.json.Decoder[ClientFrame]] = msgspec.json.Decoder(
    Auth | RawPublish | Subscribe | Unsubscribe | Ack | Nack | Extend
)
_value_decoder: Final = msgspec.json.Decoder()


def decode_hub_frame(data: str, *, max_size: int = MAX_FRAME_SIZE) -> ClientFrame:
    """:func:`~outboxhub.protocol.codec.decode_client_frame` of a text frame, the same frames accepted and
    the same errors raised, but a PUBLISH of a long frame comes as a :class:`RawPublish`."""
    if len(data) < RAW_FROM:
        return decode_client_frame(data, max_size=max_size)
    if len(data) > max_size >> 2:  # else within the limit even at 4 UTF-8 bytes per character
        check_frame_size(data, max_size)
    try:
        frame = _hub_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        return decode_client_frame(data, max_size=max_size)  # raises the typed decoder's error
    if (
        type(frame) is RawPublish
        and memoryview(frame.payload)[0] != _QUOTE
        and not _valid(data, frame.payload)
    ):
        return decode_client_frame(data, max_size=max_size)
    return frame


def _valid(data: str, payload: msgspec.Raw) -> bool:
    """Whether a payload that is not a JSON string decodes, and nests no deeper than a frame may."""
    try:
        value = _value_decoder.decode(payload)
        if type(value) is dict or type(value) is list:
            check_depth(data, [value])  # as decode_client_frame measures it: in the frame, one level down
    except (msgspec.DecodeError, RecursionError, ValueError):
        return False
    return True
