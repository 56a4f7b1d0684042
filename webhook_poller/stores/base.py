"""What every job store shares; a backend implements only its primitives.

The way saq's ``Queue`` holds ``enqueue`` and its backends implement ``_enqueue``: the public
verbs that are the same for every backend live here (group commit of creates and saves, the
codec between jobs and stored text, sessions, the shared secret, the schema version check and
its migrations), and a backend fills in the ``_``-prefixed primitives below.

Schema versions: a backend lists its migrations in order; migration ``n`` (1-based) turns a
store of version ``n - 1`` into version ``n``, and the store records the version it reached
(SQLite's ``PRAGMA user_version``, Redis's ``{prefix}schema`` key). Version 0 is a store from
before versions were recorded (the release layout, which migration 1 adopts). A store holding
a newer version than this code knows is refused at ``open`` with one clear error: an older
release must never write into a layout it does not understand.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import structlog

from ..errors import LeaseLost, StoreSchemaError, StoreUnavailable
from ..model import ACTIVE_STATES, Delivery, Job
from .batching import GroupCommit
from .codec import delivery_from_dict, delivery_to_dict, dumps, job_from_dict, job_to_dict

log = structlog.get_logger(__name__)

_ACTIVE = frozenset(s.value for s in ACTIVE_STATES)

#: What a save carries through the group commit: job, expected version, new outbox rows.
SaveItem = tuple[Job, int, tuple[Delivery, ...]]


class BaseJobStore(ABC):
    """The shared half of a job store (see the module docstring)."""

    #: Names the backend in errors and logs ("SQLite", "Redis").
    backend: ClassVar[str]
    #: The backend's migrations in order (each backend says what one is); migration ``n``
    #: brings a store from version ``n - 1`` to ``n``.
    migrations: ClassVar[Sequence[object]]

    def __init__(self) -> None:
        self._creates: GroupCommit[Job, tuple[Job | None, bool]] = GroupCommit(self._create_batch)
        self._saves: GroupCommit[SaveItem, Job] = GroupCommit(self._save_batch)
        self._schema_checked = False

    # --- lifecycle and schema ------------------------------------------------------------

    async def open(self) -> None:
        """Connect, then check the schema version and migrate an older store.

        A store that cannot be reached at start-up (Redis away) is checked on the first
        ``ping`` that reaches it, so the service still starts and reports not ready.
        """
        await self._connect()
        try:
            await self.check_schema()
        except StoreUnavailable as exc:
            log.warning("store_schema_check_deferred", backend=self.backend, error=str(exc))
        except BaseException:  # a newer schema or a failed migration: nothing stays open
            await self.close()
            raise

    @property
    def schema_version(self) -> int:
        """The version this code writes: the number of migrations it knows."""
        return len(self.migrations)

    async def check_schema(self) -> None:
        """Refuse a newer schema; bring an older one up to :attr:`schema_version`."""
        found = await self._read_schema_version()
        latest = self.schema_version
        if found > latest:
            raise StoreSchemaError(
                f"the {self.backend} store at {self._where()} has schema version {found},"
                f" newer than version {latest} that this release knows; run the release that"
                " wrote it (or a newer one), or point store.url at another store"
            )
        for version in range(found + 1, latest + 1):
            await self._migrate_to(version)
            log.info("store_migrated", backend=self.backend, schema_version=version)
        self._schema_checked = True

    async def ping(self) -> bool:
        if not await self._ping():
            return False
        if not self._schema_checked:
            try:
                await self.check_schema()
            except StoreUnavailable:
                return False
            except StoreSchemaError as exc:
                log.error("store_schema_too_new", backend=self.backend, error=str(exc))
                return False
        return True

    # --- jobs: group commit ----------------------------------------------------------------

    async def create(self, job: Job) -> tuple[Job, bool]:
        stored, created = await self._creates.submit(job)
        if stored is None:  # the job holding the key was deleted meanwhile: try once more
            return await self.create(job)
        return stored, created

    async def save(
        self, job: Job, *, expected_version: int, deliveries: Sequence[Delivery] = ()
    ) -> Job:
        return await self._saves.submit((job, expected_version, tuple(deliveries)))

    # --- codec -----------------------------------------------------------------------------

    @staticmethod
    def _is_active(job: Job) -> bool:
        return job.state.value in _ACTIVE

    @staticmethod
    def _encode_job(job: Job) -> str:
        return dumps(job_to_dict(job))

    @staticmethod
    def _decode_job(
        body: str,
        *,
        version: int,
        lease_owner: str | None,
        lease_expires_at: float | None,
        due_at: float,
        reclaims: int,
    ) -> Job:
        """A job from its stored body; the indexed fields given are the truth for what
        claims and renewals change without rewriting the body."""
        data = json.loads(body)
        data["version"] = version
        data["lease_owner"] = lease_owner
        data["lease_expires_at"] = lease_expires_at
        data["due_at"] = due_at
        data["reclaims"] = reclaims
        return job_from_dict(data)

    @staticmethod
    def _encode_delivery(delivery: Delivery) -> str:
        return dumps(delivery_to_dict(delivery))

    @staticmethod
    def _decode_delivery(body: str | bytes) -> Delivery:
        return delivery_from_dict(json.loads(body))

    # --- small shared values -----------------------------------------------------------------

    async def get_or_create_secret(self, name: str, factory_value: str) -> str:
        """The value stored under ``name``; ``factory_value`` is stored if there is none (the
        first instance's value wins, so every instance signs with the same secret)."""
        await self._meta_insert(name, factory_value)
        value = await self._meta_get(name)
        if value is None:
            raise StoreUnavailable(f"the {self.backend} store lost the value it just stored")
        return value

    async def put_session(self, session_id: str, data: Mapping[str, Any]) -> None:
        await self._write_session(session_id, dumps(dict(data)))

    async def get_session(self, session_id: str) -> Mapping[str, Any] | None:
        raw = await self._read_session(session_id)
        if raw is None or isinstance(raw, Mapping):
            return None if raw is None else dict(raw)
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else {"value": value}

    # --- primitives a backend implements -----------------------------------------------------

    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _ping(self) -> bool: ...

    @abstractmethod
    def _where(self) -> str:
        """Where the store lives, for errors (no credentials)."""

    @abstractmethod
    async def _read_schema_version(self) -> int: ...

    @abstractmethod
    async def _migrate_to(self, version: int) -> None:
        """Apply migration ``version`` and record it, atomically; a no-op when another
        process got there first."""

    @abstractmethod
    async def _create_batch(self, jobs: list[Job]) -> list[tuple[Job | None, bool]]:
        """Create each job unless its dedupe key is taken: (job, True), or (the job holding
        the key, False), or (None, False) when that job vanished before it could be read."""

    @abstractmethod
    async def _save_batch(self, items: list[SaveItem]) -> list[Job | LeaseLost]:
        """Compare-and-set every item; a lost lease fails alone (as a LeaseLost result)."""

    @abstractmethod
    async def _meta_insert(self, name: str, value: str) -> None:
        """Store ``value`` under ``name`` unless a value is there."""

    @abstractmethod
    async def _meta_get(self, name: str) -> str | None: ...

    @abstractmethod
    async def _write_session(self, session_id: str, text: str) -> None: ...

    @abstractmethod
    async def _read_session(self, session_id: str) -> str | Mapping[str, Any] | None:
        """The stored session text (or a hash, for layouts other tools wrote), or None."""

    @abstractmethod
    async def delete_session(self, session_id: str) -> None: ...
