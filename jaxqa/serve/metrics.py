"""What the service counts, in Prometheus' text format at `GET /metrics`, each
in a registry of its own app.

- `jaxqa_requests_total{status}`: requests answered, by HTTP status;
- `jaxqa_request_seconds`: from a request's arrival to its answer;
- `jaxqa_queue_depth`: requests accepted and waiting for the model;
- `jaxqa_batch_windows`: windows per call of the model;
- `jaxqa_windows_total`, `jaxqa_real_tokens_total`, `jaxqa_padded_tokens_total`:
  windows and tokens run (their rates are windows and real tokens per
  second; 1 - real / padded is the share of padding).
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("jaxqa_requests", "Requests answered, by HTTP status", ["status"], registry=r)
        self.latency = Histogram(
            "jaxqa_request_seconds", "From a request's arrival to its answer", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("jaxqa_queue_depth", "Requests accepted and waiting for the model", registry=r)
        self.batch_windows = Histogram(
            "jaxqa_batch_windows", "Windows per call of the model", buckets=BATCH_BUCKETS, registry=r
        )
        self.windows = Counter("jaxqa_windows", "Windows run", registry=r)
        self.real_tokens = Counter("jaxqa_real_tokens", "Tokens run that are not padding", registry=r)
        self.padded_tokens = Counter("jaxqa_padded_tokens", "Tokens run, padding included", registry=r)

    def text(self) -> bytes:
        return generate_latest(self.registry)
