"""The one function that makes a URL safe to show, :func:`mask_url`, and :func:`join_url`, which puts a
split URL back together. Pure, no I/O, bottom of the import graph.

Every place the hub shows a store, outbox or JWKS URL (logs, error messages, ``/metrics`` labels,
``/outbox`` names, AUTH refusals) goes through :func:`mask_url`.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit, urlunsplit

__all__ = ["MASK", "is_secret_key", "join_url", "mask_url"]

MASK: Final = "***"

_SECRET_KEY: Final = re.compile(
    r"pass|pwd|secret|token|key|auth|cred|sig|session|cookie|bearer|private|cert",
    re.IGNORECASE,
)
_CONNINFO_SECRET: Final = re.compile(
    r"""(?P<key>\b[\w.-]*(?:pass|pwd|secret|token|key|auth|cred|sig)[\w.-]*)\s*=\s*(?:'(?:[^'\\]|\\.)*'|\S+)""",
    re.IGNORECASE,
)


def is_secret_key(name: str) -> bool:
    """Does a query or keyword name look like it carries a credential (``password``, ``token``,
    ``sslkey``, ``authSource``, ``X-Amz-Signature``, ``api_key``…)? Matching is generous on purpose."""
    return _SECRET_KEY.search(name) is not None


def join_url(parts: SplitResult) -> str:
    """:func:`urllib.parse.urlunsplit`, keeping the ``//`` of a URL with no host: libpq's Unix-socket form
    ``postgresql:///app?host=/var/run/postgresql`` stays that, where ``urlunsplit`` writes
    ``postgresql:/app…`` (for a scheme it does not know), which the drivers refuse."""
    url = urlunsplit(parts)
    if parts.scheme and not parts.netloc and not url.startswith(f"{parts.scheme}://"):
        url = f"{parts.scheme}://{url[len(parts.scheme) + 1 :]}"
    return url


def mask_url(url: str) -> str:
    """``url`` with every credential-bearing part replaced by ``***``: the password of ``user:pass@``, and
    the value of every query parameter whose name looks like a credential (:func:`is_secret_key`).

    A libpq keyword string (``host=db password=x``) has its secret values masked the same way. Anything
    that cannot be parsed becomes ``<unparseable URL>`` rather than being shown as is.
    """
    if not isinstance(url, str):
        return "<not a URL>"
    if "://" not in url and ":" not in url.split("=", 1)[0]:
        return _CONNINFO_SECRET.sub(lambda m: f"{m.group('key')}={MASK}", url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if password is not None or "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if password is not None else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_key(k) for k, _ in pairs):
            query = "&".join(
                f"{quote(k, safe='')}={MASK if is_secret_key(k) else quote(v, safe='')}" for k, v in pairs
            )
    fragment = MASK if parts.fragment else ""
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url  # nothing to hide: keep the URL exactly as given (``sqlite:///x.db`` stays as is)
    head = (
        f"{parts.scheme}://{netloc}" if url.startswith(f"{parts.scheme}://") else f"{parts.scheme}:{netloc}"
    )
    return head + parts.path + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")
