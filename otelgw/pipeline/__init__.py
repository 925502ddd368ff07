"""Decoded OTLP requests become rows: mapping (pure), queueing and hand-off to the writer."""
