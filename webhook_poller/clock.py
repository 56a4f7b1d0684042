"""The clock the core reads: wall time for due dates, a monotonic one for spacing.

Time-dependent decisions (when a job is due, when a lease expires, how long a delivery has
been retried) read an injected :class:`Clock` instead of the system clock, so tests can step
time forward without sleeping. :data:`SYSTEM_CLOCK` is the default everywhere. Waiting
itself (``asyncio.sleep``) is left to the event loop: a clock only answers "what time is it".
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol, runtime_checkable

from .model import utcnow


@runtime_checkable
class Clock(Protocol):
    """Where the core reads the time.

    ``now()`` is aware UTC wall time (due dates, leases, records); ``monotonic()`` is
    seconds from an arbitrary origin that never goes back (pauses, spacing).
    """

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock: :func:`model.utcnow` and :func:`time.monotonic`."""

    def now(self) -> datetime:
        return utcnow()

    def monotonic(self) -> float:
        return time.monotonic()


#: The default clock of every component that takes one.
SYSTEM_CLOCK: Clock = SystemClock()
