"""Every Redis key name the Redis store uses, under one configurable prefix (``store.key_prefix``).

::

    {p}job:{id}          hash: body (JSON), version, state, due_at, lease_owner,
                         lease_expires_at, reclaims, seq, session_id, model, created_at
    {p}dedupe:{key}      string: job id for a provider task (intake idempotency)
    {p}due               zset: active, unleased job id -> due time
    {p}leased            zset: active, leased job id -> lease expiry
    {p}all               zset: job id -> creation sequence (listing, newest first)
    {p}seq               counter behind the sequence
    {p}st:{state}        zset: job id -> sequence, one per state (counts, queue position)
    {p}sess:{sessionId}  zset: job id -> sequence (listing by session)
    {p}dl:{job id}       hash: "run|event|target" -> delivery JSON
    {p}dl:due            zset: "job|run|event|target" -> next attempt time (pending, unleased)
    {p}dl:leased         zset: same members -> lease expiry
    {p}dl:owner          hash: member -> lease owner
    {p}meta              hash: small shared values (the link-signing secret)
    {p}schema            string: the schema version the layout is at (absent: version 0,
                         a store written before versions were recorded)
    {p}rl:tat:{section}  string: when a provider section's next request conforms (µs, Redis
                         clock; the shared request budget); expires once idle
    {p}rl:pause:{section}  string: end of that section's 429 pause (µs); expires after it

Sessions stay at ``session:{sessionId}`` (no prefix), the layout the n8n template used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "wp:"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def dedupe(self, key: str) -> str:
        return f"{self.prefix}dedupe:{key}"

    def used(self, token: str) -> str:
        return f"{self.prefix}used:{token}"

    def state(self, state: str) -> str:
        return f"{self.prefix}st:{state}"

    def session_index(self, session_id: str) -> str:
        return f"{self.prefix}sess:{session_id}"

    def deliveries(self, job_id: str) -> str:
        return f"{self.prefix}dl:{job_id}"

    def rate_slot(self, section: str) -> str:
        return f"{self.prefix}rl:tat:{section}"

    def rate_pause(self, section: str) -> str:
        return f"{self.prefix}rl:pause:{section}"

    @property
    def due(self) -> str:
        return f"{self.prefix}due"

    @property
    def leased(self) -> str:
        return f"{self.prefix}leased"

    @property
    def all(self) -> str:
        return f"{self.prefix}all"

    @property
    def seq(self) -> str:
        return f"{self.prefix}seq"

    @property
    def dl_due(self) -> str:
        return f"{self.prefix}dl:due"

    @property
    def dl_leased(self) -> str:
        return f"{self.prefix}dl:leased"

    @property
    def dl_owner(self) -> str:
        return f"{self.prefix}dl:owner"

    def task(self, provider: str, task_id: str) -> str:
        """Provider task -> job id, for tasks a job's dedupe key does not name (pushes)."""
        return f"{self.prefix}task:{provider}:{task_id}"

    @property
    def meta(self) -> str:
        return f"{self.prefix}meta"

    @property
    def schema(self) -> str:
        return f"{self.prefix}schema"

    @staticmethod
    def session(session_id: str) -> str:
        return f"session:{session_id}"
