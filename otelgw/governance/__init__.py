"""Data governance: masking at ingest (masking.py), retention (retention.py), erasure jobs
(erasure.py) and the audit log (audit.py). Each `*_cmd.py` is one CLI command."""
