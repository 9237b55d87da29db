"""What the issuer tells its operators: structured JSON logs and Prometheus metrics.

- :mod:`issuer.observability.logs`: one JSON object per line, a request id, secrets redacted.
- :mod:`issuer.observability.metrics`: the counters and histograms behind ``GET /metrics``.
"""
