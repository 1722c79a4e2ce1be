"""The NATS JetStream store: ``nats://host:port[,host:port…]?stream=NAME&replicas=N`` (docs/jetstream.md)."""
