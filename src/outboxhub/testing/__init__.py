"""Helpers for tests and benchmarks (not used by the hub itself): a throwaway PostgreSQL schema
(``postgres``)."""
