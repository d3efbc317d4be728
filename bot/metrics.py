"""Prometheus metrics for /metrics, in a registry of our own (one per app, so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vouch_requests_total", "Access requests by outcome",
                                ["outcome"], registry=self.registry)
        self.approvals = Counter("vouch_approvals_total", "Approve and deny votes",
                                 ["decision"], registry=self.registry)
        self.certificates = Counter("vouch_certificates_issued_total", "Certificates issued",
                                    ["kind"], registry=self.registry)
        self.signing = Histogram("vouch_signing_seconds", "Time to issue one certificate "
                                 "(reserve, sign, record, audit)", registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                          1.0, 2.5, 5.0))
        self.slack_errors = Counter("vouch_slack_api_errors_total", "Slack Web API calls that "
                                    "failed after retries", ["method"], registry=self.registry)
        self.revocations = Counter("vouch_revocations_total", "Certificates revoked",
                                   registry=self.registry)
        # Scheduled jobs (vouch.scheduler): runs here by outcome (ok, failed, or skipped when
        # another replica holds the job), how long they took, and the last success.
        self.job_runs = Counter("vouch_job_runs_total", "Scheduled job runs", ["job", "outcome"],
                                registry=self.registry)
        self.job_seconds = Histogram("vouch_job_seconds", "Scheduled job run time", ["job"],
                                     registry=self.registry,
                                     buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
        self.job_last_success = Gauge("vouch_job_last_success_timestamp_seconds",
                                      "When each job last succeeded (Unix time)", ["job"],
                                      registry=self.registry)
