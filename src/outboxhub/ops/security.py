"""Who may call which ops route: ``Authorization: Bearer <jwt>`` checked with the hub's token verifier.

Every route has an :data:`Access` level, declared next to the route (see :mod:`outboxhub.ops.api`):

==========  ==================================================================================
``open``    anyone (the dashboard page, the browser client, the OpenAPI document, ``/ws``, which
            authenticates in its own protocol)
``metrics`` anyone, unless ``settings.ops_open_metrics`` is false; then as ``read`` (``/metrics``,
            ``/healthz``)
``read``    a token whose policy grants ``ops:read``
``write``   a token whose policy grants ``ops:write``
==========  ==================================================================================

A missing, malformed, invalid or expired token is ``401`` (with ``WWW-Authenticate: Bearer``); a valid
token without the scope is ``403``. Routes that return event data (``/replay``, ``/latest-by-key``) also
check subscribe rights on the pattern, like a WebSocket subscription would (:func:`require_subscribe`), and
leave out the dead letters whose original topic the token may not subscribe to (docs/security.md).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final, Literal

from outboxhub.auth.decide import Decider, dlq_original
from outboxhub.auth.jwt import Principal, TokenVerifier
from outboxhub.errors import AuthError
from outboxhub.ops._http import HTTPProblem

__all__ = [
    "PRINCIPAL",
    "Access",
    "authorize",
    "current_principal",
    "dead_letter_refusal",
    "effective_access",
    "require_subscribe",
]

Access = Literal["open", "metrics", "read", "write"]

_CHALLENGE: Final = 'Bearer realm="outboxhub"'

PRINCIPAL: Final[ContextVar[Principal | None]] = ContextVar("outboxhub_ops_principal", default=None)
"""The principal of the ops request being handled (set by the middleware for ``read``/``write`` routes)."""


def current_principal() -> Principal:
    """The authorized principal of this request; ``RuntimeError`` on an open route (a wiring bug)."""
    principal = PRINCIPAL.get()
    if principal is None:
        raise RuntimeError("no authorized principal: this handler must be on a read or write route")
    return principal


def effective_access(access: Access, *, open_metrics: bool) -> Access:
    """``metrics`` routes are ``open`` or ``read`` depending on ``settings.ops_open_metrics``."""
    if access == "metrics":
        return "open" if open_metrics else "read"
    return access


def _unauthorized(message: str, *, invalid: bool = False) -> HTTPProblem:
    challenge = f'{_CHALLENGE}, error="invalid_token"' if invalid else _CHALLENGE
    return HTTPProblem(401, message, headers={"WWW-Authenticate": challenge})


async def authorize(verifier: TokenVerifier, header: str | None, need: Literal["read", "write"]) -> Principal:
    """The principal of the ``Authorization`` header value if its token grants ``ops:<need>``.

    Raises :class:`HTTPProblem` 401 (no token, not Bearer, refused by the verifier) or 403 (no scope).
    """
    if header is None or not header.strip():
        raise _unauthorized(
            f"missing Authorization header; send 'Authorization: Bearer <token>' (ops:{need})"
        )
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Authorization header must be 'Bearer <token>'")
    try:
        principal = await verifier.verify(token.strip())
    except AuthError as exc:
        raise _unauthorized(f"{exc.code}: {exc.msg}", invalid=True) from None
    if need not in principal.policy.ops:
        has = ", ".join(f"ops:{op}" for op in sorted(principal.policy.ops)) or "no ops scope"
        raise HTTPProblem(403, f"this route needs the ops:{need} scope; the token has {has}")
    return principal


def require_subscribe(pattern: str, *, what: str) -> Decider:
    """403 unless this request's principal may subscribe to ``pattern`` (group-less, like a live
    subscription). Returns the principal's :class:`Decider`, for the dead-letter rule on each event
    (:meth:`Decider.may_read`)."""
    decider = Decider(current_principal().policy)
    if not decider.allowed("subscribe", pattern, None):
        reason = decider.explain("subscribe", pattern, None)
        raise HTTPProblem(403, f"{what} needs subscribe rights on {pattern!r}: {reason}")
    return decider


def dead_letter_refusal(topic: str) -> str:
    """Why a dead letter of ``topic`` is not shown (the dead-letter rule of docs/security.md)."""
    found = dlq_original(topic)
    where = f"{found[1]!r} for group {found[0]!r}" if found else repr(topic)
    return f"{topic!r} is a dead letter of {where}, which this token may not subscribe to"
