"""Every Prometheus metric of the service, in one place.

Labels are low-cardinality (route templates, methods, status codes, result codes, job names);
never a card number, terminal number, account or key id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "cardsvc_http_requests_total",
    "HTTP requests handled, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "cardsvc_http_request_duration_seconds",
    "HTTP request latency by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DOMAIN_ERRORS = Counter(
    "cardsvc_domain_errors_total",
    "Requests ended by a domain error, by error class.",
    ["error"],
)
WORKER_JOB_RUNS = Counter(
    "cardsvc_worker_job_runs_total",
    "Periodic job runs of the worker, by job and result (ok, failed, skipped_locked).",
    ["job", "result"],
)
WORKER_JOB_LAST_SUCCESS = Gauge(
    "cardsvc_worker_job_last_success_timestamp_seconds",
    "Unix time of the last successful run of each periodic job.",
    ["job"],
)
