"""The wire protocol, sans I/O: frame types, decoding with errors that name the field, encoding."""
