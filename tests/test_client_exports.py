"""The SDK's public surface is exactly ``outboxhub.client.__all__`` (as httpx's test_exported_members)."""

from __future__ import annotations

import importlib
import pkgutil

import outboxhub.client

EXPECTED = {
    "DEFAULT_URL",
    "AuthFailed",
    "Backoff",
    "BadRequest",
    "ClientClosed",
    "Event",
    "Forbidden",
    "Handler",
    "HubClient",
    "HubConnectionError",
    "HubError",
    "InboxHandler",
    "InboxRunner",
    "InternalError",
    "Message",
    "NotAuthenticated",
    "NotSubscribed",
    "PayloadError",
    "PublishResult",
    "RateLimited",
    "Retry",
    "SubscribeContext",
    "Subscription",
    "SyncHubClient",
    "SyncMessage",
    "SyncSubscription",
    "Terminate",
    "TokenExpired",
    "TokenProvider",
    "TokenSource",
    "TooLarge",
    "Topic",
    "Unavailable",
    "connect",
    "connect_sync",
    "error_from_code",
}


def test_exports_are_pinned() -> None:
    assert set(outboxhub.client.__all__) == EXPECTED
    assert len(outboxhub.client.__all__) == len(EXPECTED)


def test_every_public_attribute_is_exported() -> None:
    public = {
        name
        for name in dir(outboxhub.client)
        if not name.startswith("_") and not _is_submodule(getattr(outboxhub.client, name))
    }
    # ``annotations`` comes from ``from __future__ import annotations``
    assert public - {"annotations"} == EXPECTED


def _is_submodule(obj: object) -> bool:
    return type(obj).__name__ == "module"


def test_private_modules_declare_all_and_everything_public_is_reexported() -> None:
    reexported = set(outboxhub.client.__all__)
    for info in pkgutil.iter_modules(outboxhub.client.__path__):
        assert info.name.startswith("_"), f"outboxhub.client.{info.name} should be private (_{info.name})"
        module = importlib.import_module(f"outboxhub.client.{info.name}")
        assert hasattr(module, "__all__"), f"{module.__name__} has no __all__"
        for name in module.__all__:
            # helpers shared between the private modules stay private to the package
            if name in {"Link", "encode_payload", "get_token", "refresh_delay"}:
                continue
            assert name in reexported, f"{module.__name__}.{name} is in its __all__ but not exported"


def test_exported_classes_present_themselves_as_outboxhub_client() -> None:
    for name in outboxhub.client.__all__:
        obj = getattr(outboxhub.client, name)
        module = getattr(obj, "__module__", None)
        if isinstance(obj, type) and module is not None and module.startswith("outboxhub.client"):
            assert module == "outboxhub.client", name
