"""Every Prometheus metric of the service, in one place, and their exposition.

Labels are low-cardinality (route templates, methods, status codes, result codes, job names);
never a card number, terminal number, account or key id.

With several API worker processes (``cardsvc serve --workers N``) each process writes its values
to files in one directory (prometheus_client's multiprocess mode, switched on by
``PROMETHEUS_MULTIPROC_DIR`` before this module is imported), and whichever worker answers
``/metrics`` reports the sum over all of them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

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
HSM_LATENCY = Histogram(
    "cardsvc_hsm_command_duration_seconds",
    "HSM commands over the wire, by command: from the request to its answer, retries included.",
    ["command"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
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
    multiprocess_mode="max",
)


def prepare_multiprocess(directory: Path) -> None:
    """Before worker processes start: an empty directory for their values, named to them by the
    environment they inherit. Files of an earlier run would be added in, so they are removed."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)


def exposition() -> tuple[bytes, str]:
    """The text exposition (body, content type) of this process, or of every worker process."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


BILL_PAYMENTS = Counter(
    "cardsvc_bill_payments_total",
    "Bill payments that reached a final state, by biller and outcome",
    ["biller", "outcome"],  # outcome: paid, failed, reversed, refunded
)
BILLER_LATENCY = Histogram(
    "cardsvc_biller_latency_seconds",
    "Time to a biller's signed answer, by biller and request",
    ["biller", "request"],  # request: query, pay, status, reverse, refund
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BILLER_NO_ANSWER = Counter(
    "cardsvc_biller_no_answer_total",
    "Requests to a biller that got no trustworthy answer, by biller and request",
    ["biller", "request"],
)
BILL_OUTBOX_DEPTH = Gauge(
    "cardsvc_bill_outbox_depth",
    "Bill payments in flight (rows of the outbox), as the worker last counted",
    multiprocess_mode="max",
)
BILL_OUTBOX_OLDEST_SECONDS = Gauge(
    "cardsvc_bill_outbox_oldest_seconds",
    "Age of the oldest row of the bill payments' outbox (0 when it is empty)",
    multiprocess_mode="max",
)
