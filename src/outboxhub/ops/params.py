"""Reading ops API inputs (query parameters and JSON bodies) with a 400 that names the bad one. Pure, no I/O.

Every reader raises :class:`BadParameter` with the parameter's name and the problem; the API answers it as
``400 {"error": "<name>: <problem>"}``. Unknown query parameters are refused too, so a typo such as
``fromseq=`` is reported instead of silently ignored.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Final, Protocol

from outboxhub.errors import TopicError
from outboxhub.topics import DLQ_MAX_SEGMENTS, validate_group, validate_pattern, validate_topic

__all__ = [
    "MAX_INT",
    "BadParameter",
    "Params",
    "Query",
    "check_known",
    "parse_int",
]

MAX_INT: Final = 2**63 - 1
"""Largest integer any parameter accepts (the stores keep seq and ts as signed 64-bit integers)."""

_SHOWN_MAX: Final = 60


class Params(Protocol):
    """What :class:`Query` reads: ``items()`` that repeat a name given twice (aiohttp's ``request.query``
    does; a plain dict cannot repeat one)."""

    def items(self) -> Iterable[tuple[str, str]]: ...


class BadParameter(ValueError):
    """A request input is missing or invalid. ``name`` is the parameter, ``problem`` the reason."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


def _show(value: str) -> str:
    return repr(value) if len(value) <= _SHOWN_MAX else f"{value[:_SHOWN_MAX]!r}… ({len(value)} chars)"


def parse_int(name: str, raw: str, *, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """``raw`` as a decimal integer in ``[minimum, maximum]``, else :class:`BadParameter`."""
    text = raw.strip()
    digits = text[1:] if text[:1] == "-" else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        raise BadParameter(name, f"must be a whole number, got {_show(raw)}")
    value = int(text)
    if value < minimum:
        raise BadParameter(name, f"must be >= {minimum}, got {value}")
    if value > maximum:
        raise BadParameter(name, f"must be <= {maximum}, got {value}")
    return value


def check_known(params: Collection[str], known: Collection[str]) -> None:
    """Refuse parameters not in ``known`` (sorted, so the message is stable)."""
    unknown = sorted(set(params) - set(known))
    if unknown:
        expected = ", ".join(sorted(known)) if known else "none"
        raise BadParameter(unknown[0], f"unknown parameter (this route takes: {expected})")


class Query:
    """The query string of one request, read field by field.

    Built with the names the route accepts: any other name raises :class:`BadParameter`. A parameter given
    twice is refused as well (which value would win is not obvious).
    """

    def __init__(self, params: Params, known: Collection[str]) -> None:
        pairs = list(params.items())
        check_known([name for name, _ in pairs], known)
        self._params: dict[str, str] = {}
        for name, value in pairs:
            if name in self._params:
                raise BadParameter(name, "given more than once")
            self._params[name] = value

    def has(self, name: str) -> bool:
        """Whether ``name`` was given (even empty)."""
        return name in self._params

    def text(self, name: str, *, required: bool = True) -> str | None:
        """The raw value; missing or empty raises when ``required``, else returns None."""
        value = self._params.get(name)
        if value is None or value == "":
            if required:
                raise BadParameter(name, "required" if value is None else "must not be empty")
            return None
        return value

    def required(self, name: str) -> str:
        """The raw value of a required parameter."""
        value = self.text(name, required=True)
        assert value is not None
        return value

    def integer(
        self, name: str, *, default: int | None = None, minimum: int = 0, maximum: int = MAX_INT
    ) -> int | None:
        """An optional integer parameter (``default`` when absent)."""
        raw = self.text(name, required=False)
        if raw is None:
            return default
        return parse_int(name, raw, minimum=minimum, maximum=maximum)

    def group(self, name: str) -> str:
        """A required consumer group name (one topic segment: 1-128 of ``A-Z a-z 0-9 _ : -``)."""
        value = self.required(name)
        try:
            return validate_group(value)
        except TopicError as exc:
            raise BadParameter(name, str(exc).removeprefix("group ")) from None

    def topic(self, name: str) -> str:
        """A required concrete topic (dead-letter topics ``dlq.<group>.<topic>`` included)."""
        value = self.required(name)
        try:
            return validate_topic(value, max_segments=DLQ_MAX_SEGMENTS)
        except TopicError as exc:
            raise BadParameter(name, str(exc)) from None

    def pattern(self, name: str) -> str:
        """A required topic pattern (``*`` and ``**`` allowed)."""
        value = self.required(name)
        try:
            return validate_pattern(value, max_segments=DLQ_MAX_SEGMENTS)
        except TopicError as exc:
            raise BadParameter(name, str(exc)) from None
