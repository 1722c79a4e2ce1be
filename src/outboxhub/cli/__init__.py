"""The ``outboxhub`` command: ``app`` (the typer app, serve and token, and the registration of the
others), ``client`` (publish, tail), ``drain``; ``common`` holds what they share.

``python -m outboxhub.cli`` runs it.
"""
