"""Typed topics: a topic name bound to a payload type, and the payload codecs behind it.

Three kinds of payload type are supported, each with its own codec:

* a **msgspec Struct** or a **dataclass**: encoded natively by msgspec, decoded with ``msgspec.convert``;
* a **pydantic model**: encoded with ``model_dump(mode="json")``, decoded with ``model_validate``.

A payload that does not decode raises :class:`PayloadError` with a one-line reason; subscriptions NACK
such an event with that reason, so after ``max_deliver`` attempts it lands in ``dlq.<group>.<topic>``.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Generic, Literal, TypeVar

import msgspec

from outboxhub.topics import validate_pattern

__all__ = ["PayloadError", "Topic", "encode_payload"]

T = TypeVar("T")

_Kind = Literal["msgspec", "pydantic"]


class PayloadError(ValueError):
    """An event's payload does not decode as its topic's payload type."""


def _is_pydantic_model(tp: object) -> bool:
    # Cheap and import-free: a pydantic model can only exist once pydantic has been imported.
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


def _kind_of(tp: object) -> _Kind:
    if _is_pydantic_model(tp):
        return "pydantic"
    if isinstance(tp, type) and (issubclass(tp, msgspec.Struct) or dataclasses.is_dataclass(tp)):
        return "msgspec"
    raise TypeError(
        f"Topic payload type must be a dataclass, a pydantic model or a msgspec Struct, got {tp!r}"
    )


_PLAIN: frozenset[type] = frozenset({dict, list, str, int, float, bool, type(None)})


def encode_payload(payload: object) -> object:
    """``payload`` in a form the frame encoder takes: pydantic models become JSON builtins; everything
    else (JSON values, Structs, dataclasses) is passed through to msgspec as is."""
    if type(payload) in _PLAIN:
        return payload
    if _is_pydantic_model(type(payload)):
        return payload.model_dump(mode="json")  # type: ignore[attr-defined]
    return payload


class Topic(Generic[T]):
    """A topic (or subscription pattern) whose payloads are of type ``T``.

    ``Topic("process.state", ProcessState)`` — publish accepts only ``ProcessState`` for it (checked by
    mypy and at run time), and subscriptions made with it hand the decoded ``ProcessState`` to the
    handler. The name may be a pattern (``process.*``) for subscribing; publishing needs a concrete topic.
    """

    __slots__ = ("_kind", "name", "payload_type")

    name: str
    payload_type: type[T]

    def __init__(self, name: str, payload_type: type[T]) -> None:
        validate_pattern(name)
        self._kind: _Kind = _kind_of(payload_type)
        self.name = name
        self.payload_type = payload_type

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, {self.payload_type.__qualname__})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Topic) and (self.name, self.payload_type) == (other.name, other.payload_type)

    def __hash__(self) -> int:
        return hash((self.name, self.payload_type))

    def encode(self, payload: T) -> object:
        """The wire form of ``payload``; raises ``TypeError`` when it is not a ``T``."""
        if not isinstance(payload, self.payload_type):
            expected, got = self.payload_type.__qualname__, type(payload).__qualname__
            raise TypeError(f"topic {self.name!r} takes {expected} payloads, got {got}")
        if self._kind == "pydantic":
            return payload.model_dump(mode="json")  # type: ignore[attr-defined]
        return payload

    def decode(self, raw: Any) -> T:
        """``raw`` (the event's JSON payload) as a ``T``; raises :class:`PayloadError` with the reason."""
        try:
            if self._kind == "pydantic":
                result: T = self.payload_type.model_validate(raw)  # type: ignore[attr-defined]
                return result
            return msgspec.convert(raw, self.payload_type)
        except msgspec.ValidationError as exc:
            detail = str(exc)
        except ValueError as exc:  # pydantic.ValidationError derives from ValueError
            detail = _pydantic_detail(exc)
        raise PayloadError(f"payload does not decode as {self.payload_type.__qualname__}: {detail}")


def _pydantic_detail(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    items: list[dict[str, Any]] = errors()
    if not items:
        return str(exc)
    first = items[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "(root)"
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    return f"{first.get('msg', 'invalid')} - at `{where}`{more}"
