"""Pure parts of the client SDK: backoff, refresh timing, error map, typed-topic codecs, argument checks."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import random

import msgspec
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxhub.client import (
    AuthFailed,
    Backoff,
    BadRequest,
    ClientClosed,
    Forbidden,
    HubClient,
    HubConnectionError,
    HubError,
    InternalError,
    NotAuthenticated,
    NotSubscribed,
    PayloadError,
    RateLimited,
    TokenExpired,
    TooLarge,
    Topic,
    Unavailable,
    error_from_code,
)
from outboxhub.client._token import get_token, refresh_delay
from outboxhub.client._topic import encode_payload
from outboxhub.client._window import Window as _Window
from outboxhub.errors import AuthError, OutboxhubError, TopicError
from outboxhub.protocol.codec import ERROR_CODES

# -- backoff -------------------------------------------------------------------------------------------


@given(
    initial=st.floats(0.001, 10),
    factor=st.floats(1, 10),
    jitter=st.floats(0, 0.99),
    extra=st.floats(0, 100),
    attempt=st.integers(0, 10_000),
    seed=st.integers(0, 2**32),
)
def test_backoff_delay_stays_within_its_bounds(
    initial: float, factor: float, jitter: float, extra: float, attempt: int, seed: int
) -> None:
    b = Backoff(initial_s=initial, max_s=initial + extra, multiplier=factor, jitter=jitter)
    d = b.delay(attempt, random.Random(seed))
    assert 0 < d <= b.max_s
    base = min(b.max_s, initial * factor ** min(attempt, 64))
    assert base * (1 - jitter) - 1e-9 <= d <= base * (1 + jitter) + 1e-9


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    delays = Backoff(initial_s=0.1, max_s=1.0, jitter=0).delays()
    assert [round(next(delays), 6) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial_s": 0}, "initial_s"),
        ({"initial_s": 2, "max_s": 1}, "max_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1}, "jitter"),
    ],
)
def test_backoff_rejects_bad_settings(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Backoff(**kwargs)


# -- token refresh timing ----------------------------------------------------------------------------------


@given(now=st.floats(0, 2e9), remaining=st.floats(0.001, 1e6))
def test_refresh_happens_before_expiry_and_not_too_early(now: float, remaining: float) -> None:
    delay = refresh_delay(now + remaining, now)
    assert 0 <= delay < remaining
    # at most a minute early, and never before two thirds of the lifetime
    assert delay >= remaining - 60 - 1e-6
    assert delay >= remaining * 2 / 3 - 1e-6


def test_refresh_of_an_expired_token_is_immediate() -> None:
    assert refresh_delay(100, 200) == 0


async def test_token_sources() -> None:
    async def provider() -> str:
        return "async-token"

    assert await get_token("fixed") == "fixed"
    assert await get_token(lambda: "sync-token") == "sync-token"
    assert await get_token(provider) == "async-token"
    with pytest.raises(ValueError, match="non-empty str"):
        await get_token(lambda: "")


# -- error map -------------------------------------------------------------------------------------------

EXPECTED = {
    "no_token": AuthFailed,
    "jwt_invalid": AuthFailed,
    "token_expired": TokenExpired,
    "not_authenticated": NotAuthenticated,
    "forbidden": Forbidden,
    "bad_request": BadRequest,
    "too_large": TooLarge,
    "rate_limited": RateLimited,
    "not_subscribed": NotSubscribed,
    "unavailable": Unavailable,
    "internal": InternalError,
}


def test_every_protocol_code_has_its_exception() -> None:
    assert set(EXPECTED) == set(ERROR_CODES)
    for code, cls in EXPECTED.items():
        exc = error_from_code(code, "the message")
        assert type(exc) is cls
        assert (exc.code, exc.msg, str(exc)) == (code, "the message", f"{code}: the message")
        assert isinstance(exc, HubError) and isinstance(exc, OutboxhubError)


def test_auth_failures_are_also_auth_errors() -> None:
    assert isinstance(error_from_code("token_expired", "x"), AuthError)
    assert isinstance(error_from_code("jwt_invalid", "x"), AuthFailed)


def test_unknown_and_link_codes() -> None:
    exc = error_from_code("brand_new_code", "from a newer hub")
    assert type(exc) is HubError and exc.code == "brand_new_code"
    assert type(error_from_code("connection", "down")) is HubConnectionError
    closed = error_from_code("closed", "bye")
    assert type(closed) is ClientClosed and isinstance(closed, HubConnectionError)


# -- typed topics ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class DcState:
    name: str
    up: bool
    at: datetime.datetime


class StructState(msgspec.Struct):
    name: str
    up: bool
    tags: list[str] = []


class PydState(pydantic.BaseModel):
    name: str
    up: bool
    at: datetime.datetime


AT = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def _wire(topic: Topic[object], payload: object) -> object:
    """What a subscriber's decode sees: the payload after a JSON round trip."""
    return msgspec.json.decode(msgspec.json.encode(topic.encode(payload)))


@pytest.mark.parametrize(
    ("tp", "payload"),
    [
        (DcState, DcState(name="db", up=True, at=AT)),
        (StructState, StructState(name="db", up=False, tags=["a"])),
        (PydState, PydState(name="db", up=True, at=AT)),
    ],
)
def test_typed_topic_round_trip(tp: type[object], payload: object) -> None:
    topic: Topic[object] = Topic("process.state", tp)
    assert topic.decode(_wire(topic, payload)) == payload


@given(name=st.text(), up=st.booleans(), tags=st.lists(st.text(), max_size=5))
def test_struct_round_trip_property(name: str, up: bool, tags: list[str]) -> None:
    topic = Topic("process.state", StructState)
    value = StructState(name=name, up=up, tags=tags)
    assert topic.decode(_wire(topic, value)) == value  # type: ignore[arg-type]


@pytest.mark.parametrize("tp", [DcState, StructState, PydState])
def test_undecodable_payload_names_the_type_and_field(tp: type[object]) -> None:
    topic: Topic[object] = Topic("process.state", tp)
    with pytest.raises(PayloadError, match=rf"does not decode as {tp.__name__}: .*up"):
        topic.decode({"name": "db", "up": "not-a-bool", "at": AT.isoformat()})
    with pytest.raises(PayloadError, match=f"does not decode as {tp.__name__}"):
        topic.decode("just a string")


def test_typed_topic_refuses_other_payload_types_at_run_time() -> None:
    topic = Topic("process.state", StructState)
    with pytest.raises(TypeError, match="takes StructState payloads, got dict"):
        topic.encode({"name": "db", "up": True})  # type: ignore[arg-type]


@pytest.mark.parametrize("tp", [dict, int, list[int], str])
def test_topic_payload_type_must_be_one_of_the_three_kinds(tp: type[object]) -> None:
    with pytest.raises(TypeError, match="dataclass, a pydantic model or a msgspec Struct"):
        Topic("process.state", tp)


def test_topic_name_is_checked() -> None:
    with pytest.raises(TopicError):
        Topic("bad..topic", StructState)
    assert Topic("process.*", StructState).name == "process.*"  # patterns are fine for subscribing
    assert Topic("a", StructState) == Topic("a", StructState) != Topic("a", DcState)


def test_untyped_pydantic_payloads_are_dumped_as_json() -> None:
    assert encode_payload(PydState(name="x", up=True, at=AT)) == {
        "name": "x",
        "up": True,
        "at": "2026-01-02T03:04:05Z",
    }
    marker = {"a": 1}
    assert encode_payload(marker) is marker


# -- argument checks (no connection needed) ----------------------------------------------------------------


@pytest.mark.parametrize("url", ["", "127.0.0.1:8090", "ftp://host/", "ws://"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="must look like ws://host:port/"):
        HubClient(url, "token")


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="token must not be empty"):
        HubClient("ws://127.0.0.1:1/", "")
    with pytest.raises(ValueError, match="max_in_flight"):
        HubClient("ws://127.0.0.1:1/", "t", max_in_flight=0)
    client = HubClient("ws://127.0.0.1:1/", "t")
    with pytest.raises(ValueError, match="start"):
        client.messages("a.*", "g", start="yesterday")
    with pytest.raises(ValueError, match="max_deliver"):
        client.messages("a.*", "g", max_deliver=0)
    with pytest.raises(ValueError, match="group"):
        client.messages("a.*", "no spaces allowed")
    with pytest.raises(TopicError):
        client.messages("a..b", "g")


async def test_using_a_client_before_connect_is_a_clear_error() -> None:
    client = HubClient("ws://127.0.0.1:1/", "t")
    with pytest.raises(RuntimeError, match="not connected"):
        await client.publish("a.b", 1)


async def test_connect_to_nothing_raises_a_connection_error(unused_tcp_port: int) -> None:
    client = HubClient(f"ws://127.0.0.1:{unused_tcp_port}/", "t")
    with pytest.raises(HubConnectionError, match="cannot connect"):
        await client.connect()
    with pytest.raises(ClientClosed):
        await client.publish("a.b", 1)


# -- the in-flight window --------------------------------------------------------------------------------


async def test_in_flight_window_is_fifo_bounded_and_survives_cancellation() -> None:

    window = _Window(2)
    inside: list[int] = []
    gates = [asyncio.Event() for _ in range(6)]

    async def user(i: int) -> None:
        async with window:
            inside.append(i)
            await gates[i].wait()

    tasks = [asyncio.create_task(user(i)) for i in range(6)]
    await asyncio.sleep(0)
    assert inside == [0, 1]  # two slots
    tasks[2].cancel()  # a waiter gives up: its place is skipped, no slot is lost
    gates[0].set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert inside == [0, 1, 3]  # FIFO, 2 was cancelled
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert inside == [0, 1, 3, 4, 5]
    assert window._free == 2 and not window._waiters
