"""A tiny Django project whose orders publish events through outboxhub's transactional outbox."""
