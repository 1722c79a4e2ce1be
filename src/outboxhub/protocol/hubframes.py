"""How the hub reads a client frame: as :func:`~outboxhub.protocol.codec.decode_client_frame` does, except
that a ``PUBLISH`` whose payload is a JSON string keeps that string as its JSON text (``msgspec.Raw``), which
the store then writes as it came (``store/codec.prepare`` encodes a ``Raw`` verbatim).

Why strings only: a raw payload is trusted without decoding only if the frame decode already checked
everything the stored text must satisfy, since every later read decodes it (a payload that fails there would
break every consumer's ``EVENT`` frame). msgspec checks a raw span's JSON syntax and escapes (control
characters, bad or lone-surrogate ``\\u`` escapes are refused exactly as when it builds a ``str``) but not its
UTF-8, nesting depth or number range (docs/benchmarks.md, "payload pass-through", third round). A string has
no depth and no numbers, and a text frame arrives as a ``str``, valid UTF-8 by construction: nothing is left
to check. Any other payload (object, array, number, …), a ``bytes`` frame, and any frame that does not decode
this way go through ``decode_client_frame``, with its checks, errors and messages unchanged.

What it saves per 4 KiB string payload: building the Python ``str`` at decode and the JSON re-encode in
``prepare`` (≈ 1.9 of ≈ 4.3 µs). The stored text of a string payload is now the client's own spelling
(``"\\u0041"`` stays escaped where the re-encode wrote ``"A"``): the same JSON value for every reader.
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
    _check_size,
    decode_client_frame,
)

__all__ = ["StringPublish", "decode_hub_frame"]


class StringPublish(Publish, frozen=True, kw_only=True, tag="PUBLISH"):
    """``PUBLISH`` as the hub keeps it when its payload is a JSON string: the payload is that string's JSON
    text, quotes included (``Publish.to_new_event`` hands it on as it is)."""

    payload: msgspec.Raw = msgspec.Raw(b"null")  # absent: not a string, decoded the ordinary way


_decoder: Final[msgspec.json.Decoder[ClientFrame]] = msgspec.json.Decoder(
    Auth | StringPublish | Subscribe | Unsubscribe | Ack | Nack | Extend
)
_STRING_PAYLOAD: Final = '"payload":"'
"""How a compact encoder (msgspec, ``JSON.stringify``) writes a string payload; other spellings, or the key
met elsewhere in the frame, only mean the frame is decoded the ordinary way."""
_QUOTE: Final = ord('"')


def decode_hub_frame(data: str | bytes, *, max_size: int = MAX_FRAME_SIZE) -> ClientFrame:
    """Read one client frame for the hub: :func:`~outboxhub.protocol.codec.decode_client_frame`, with a
    string payload kept as JSON text (:class:`StringPublish`). Raises what ``decode_client_frame`` raises."""
    if type(data) is str and _STRING_PAYLOAD in data:
        _check_size(data, max_size)
        try:
            frame = _decoder.decode(data)
        except (msgspec.DecodeError, RecursionError, UnicodeError):
            pass  # decode_client_frame raises the error (and the message) it always did
        else:
            if type(frame) is not StringPublish or memoryview(frame.payload)[0] == _QUOTE:
                return frame
    return decode_client_frame(data, max_size=max_size)
