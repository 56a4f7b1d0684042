"""Prometheus metrics (prometheus-client), one registry per running app.

Counters and histograms are updated where things happen (a poll, a finished job, a stored
video, a delivery); the per-state gauges are read from the store at scrape time, so they
show the whole fleet, not only this instance. Under ``serve --workers N`` (prometheus-client's
``PROMETHEUS_MULTIPROC_DIR`` set) every worker writes its values to that directory and a
scrape of any worker sums them, so one scrape shows the whole server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .model import JobState

ATTEMPT_BUCKETS = (1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 100)
SECONDS_BUCKETS = (10, 30, 60, 120, 180, 300, 600, 900, 1800, 3600, 7200)
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every metric the service exports; ``render`` produces the text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Gauge(
            "webhook_poller_jobs",
            "Jobs in the store by status",
            ["status"],
            registry=r,
            multiprocess_mode="mostrecent",  # read from the store: the latest scrape is right
        )
        self.queue_length = Gauge(
            "webhook_poller_queue_length",
            "Jobs waiting for an active slot",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.active_jobs = Gauge(
            "webhook_poller_active_jobs",
            "Jobs holding an active slot (polling to notifying)",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.inflight = Gauge(
            "webhook_poller_inflight_steps",
            "Job steps and deliveries this instance is working on",
            registry=r,
            multiprocess_mode="livesum",  # summed over the running workers
        )
        self.polls = Counter(
            "webhook_poller_polls", "Provider status checks", ["provider", "outcome"], registry=r
        )
        self.pushes = Counter(
            "webhook_poller_pushes",
            "Provider pushes to /callbacks/{provider} (moved, ignored, unknown, forged)",
            ["provider", "outcome"],
            registry=r,
        )
        self.failures = Counter(
            "webhook_poller_job_failures",
            "Jobs that ended failed",
            ["provider", "code"],
            registry=r,
        )
        self.finished = Counter(
            "webhook_poller_jobs_finished",
            "Jobs that reached a final state",
            ["model", "status"],
            registry=r,
        )
        self.attempts = Histogram(
            "webhook_poller_attempts_until_completion",
            "Provider polls until a job succeeded",
            ["model"],
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.generation = Histogram(
            "webhook_poller_generation_seconds",
            "Seconds from intake to success",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.lateness = Histogram(
            "webhook_poller_schedule_lateness_seconds",
            "How long after its due time a job step was claimed (scheduler saturation)",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.bytes_downloaded = Counter(
            "webhook_poller_downloaded_bytes", "Bytes of video stored", ["provider"], registry=r
        )
        self.deliveries = Counter(
            "webhook_poller_deliveries",
            "Notifier delivery attempts",
            ["target", "event", "status"],
            registry=r,
        )
        self.intake = Counter(
            "webhook_poller_intake", "Intake requests answered", ["result"], registry=r
        )

    def set_counts(self, counts: Mapping[str, int], inflight: int) -> None:
        for state in JobState:
            self.jobs.labels(state.value).set(counts.get(state.value, 0))
        self.queue_length.set(counts.get(JobState.QUEUED.value, 0))
        self.active_jobs.set(
            sum(
                counts.get(s.value, 0)
                for s in JobState
                if s
                not in (JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
            )
        )
        self.inflight.set(inflight)

    def render(self) -> bytes:
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if shared:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, shared)
            return generate_latest(registry)
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "Metrics"]
