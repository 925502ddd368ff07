"""otelgw: an OTLP ingestion gateway and trace store for LLM inference observability."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("otelgw")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
