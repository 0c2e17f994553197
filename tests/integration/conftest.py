"""Integration tests: local Ray + SimEngine replicas (no model)."""
