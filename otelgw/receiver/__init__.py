"""OTLP receivers (gRPC and HTTP) and the pure request decoder they share."""
