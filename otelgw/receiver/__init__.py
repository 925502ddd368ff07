"""OTLP receivers (gRPC and HTTP) and the pure request decoder they share."""


class ListenError(OSError):
    """A listener could not bind its address (taken, or not an address of this host)."""
