"""Durable export of audit streams to JSONL files, through a Redis consumer group.

One file per project per UTC day (of the entry's stream id): ``<dir>/<project>/YYYY-MM-DD.jsonl``,
one entry per line, ``{"id": "<stream id>", <every field, in order, as written>}`` (the raw
strings, so the chain can be checked again from the files). The steps of a batch:

1. read entries through the group (``XREADGROUP``): first those delivered to this consumer
   and never acknowledged (a previous run died), then those another consumer left pending
   for ``claim_idle_ms`` (``XAUTOCLAIM``), then new ones (``>``);
2. append each entry whose id its day's file does not hold yet, flush and ``fsync``;
3. ``XACK`` them.

Killed at any point (SIGKILL included) and restarted, it loses nothing (an entry is
acknowledged only once it is on disk, so a dead run's entries are delivered again) and
duplicates nothing (a file's ids are read back, a torn last line is cut off, and an entry
already there is not written again). Lines are in id order, except entries taken over from
another consumer, which come when they are claimed. Run one exporter per directory.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from prism_limiter.engine import _validate
from prism_limiter.engine._keys import ProjectKeys, projects_key
from prism_limiter.engine._protocol import map_error, text
from prism_limiter.errors import InvalidRequest

_CACHED_FILES = 8


def _line(entry_id: str, fields: dict[Any, Any]) -> bytes:
    data = {"id": entry_id}
    for k, v in fields.items():
        data[text(k)] = v.decode(errors="replace") if isinstance(v, bytes) else str(v)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _line_id(line: bytes) -> str | None:
    try:
        value = json.loads(line).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def day_of(entry_id: str) -> str:
    """The UTC day of a stream id (its milliseconds), as the file name's ``YYYY-MM-DD``."""
    ms = int(entry_id.split("-", 1)[0])
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


class AuditExporter:
    """Export every project's audit stream (or ``projects``) to JSONL files under
    ``directory``, exactly once per entry, through consumer group ``group``.

    ``limiter`` is a sync :class:`~prism_limiter.Limiter` (its client and namespace are used).
    ``export()`` makes one pass and returns the number of lines written; ``run()`` keeps
    following until ``stop`` is set. ``projects=None`` exports the projects that have a stored
    policy (the ``<ns>:projects`` set), looked up again on every pass.
    """

    def __init__(
        self,
        limiter: Any,
        directory: str | os.PathLike[str],
        *,
        projects: Iterable[str] | None = None,
        group: str = "prism-export",
        consumer: str = "exporter",
        batch: int = 500,
        claim_idle_ms: int = 60_000,
        block_ms: int = 250,
    ) -> None:
        _validate.name("group", group)
        _validate.name("consumer", consumer)
        for label, value in (("batch", batch), ("block_ms", block_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequest(f"{label} must be a positive int, got {value!r}")
        if (
            isinstance(claim_idle_ms, bool)
            or not isinstance(claim_idle_ms, int)
            or claim_idle_ms < 0
        ):
            raise InvalidRequest(f"claim_idle_ms must be an int >= 0, got {claim_idle_ms!r}")
        self._client = limiter.client
        self._namespace: str = limiter.namespace
        self._projects = (
            None if projects is None else [_validate.name("project", p) for p in projects]
        )
        self.directory = Path(directory)
        self.group, self.consumer = group, consumer
        self.batch, self.claim_idle_ms, self.block_ms = batch, claim_idle_ms, block_ms
        self._ids: dict[Path, set[str]] = {}
        self._groups: set[str] = set()

    # -- Redis ------------------------------------------------------------------------------

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        name, *rest = args
        try:
            return getattr(self._client, name)(*rest, **kwargs)
        except redis.RedisError as exc:
            raise map_error(exc) from exc

    def projects(self) -> list[str]:
        if self._projects is not None:
            return list(self._projects)
        members = self._call("smembers", projects_key(self._namespace))
        return sorted(text(m) for m in members)

    def _ensure_group(self, key: str) -> None:
        if key in self._groups:
            return
        try:
            self._client.xgroup_create(key, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise map_error(exc) from exc
        except redis.RedisError as exc:
            raise map_error(exc) from exc
        self._groups.add(key)

    def _read(self, key: str, start: str, block: int | None = None) -> list[tuple[str, Any]]:
        reply = self._call(
            "xreadgroup", self.group, self.consumer, {key: start}, count=self.batch, block=block
        )
        entries: list[tuple[str, Any]] = []
        for _stream, items in reply or []:
            entries += [(text(i), f) for i, f in items]
        return entries

    # -- one pass ---------------------------------------------------------------------------

    def export(self, *, block: bool = False) -> int:
        """Export what every stream holds now; returns the number of lines written. With
        ``block``, the last read of each stream waits up to ``block_ms`` for new entries."""
        written = 0
        for project in self.projects():
            written += self.export_project(project, block=block)
        return written

    def export_project(self, project: str, *, block: bool = False) -> int:
        key = ProjectKeys(self._namespace, project).audit
        self._ensure_group(key)
        written = 0
        after = "0"  # this consumer's own pending entries first: a previous run died
        while True:
            entries = self._read(key, after)
            if not entries:
                break
            written += self._commit(project, key, entries)
            after = entries[-1][0]
        cursor = "0-0"  # then those another consumer left pending
        while True:
            reply = self._call(
                "xautoclaim",
                key,
                self.group,
                self.consumer,
                self.claim_idle_ms,
                cursor,
                count=self.batch,
            )
            cursor, entries = text(reply[0]), [(text(i), f) for i, f in reply[1]]
            if entries:
                written += self._commit(project, key, entries)
            if cursor == "0-0":
                break
        while True:  # then new ones
            entries = self._read(key, ">", self.block_ms if block else None)
            if not entries:
                return written
            written += self._commit(project, key, entries)
            block = False

    def run(self, stop: threading.Event | None = None) -> int:
        """Keep exporting (``audit export --follow``) until ``stop`` is set."""
        stop = stop or threading.Event()
        written = 0
        while not stop.is_set():
            written += self.export(block=True)
        return written

    # -- files ------------------------------------------------------------------------------

    def _commit(self, project: str, key: str, entries: list[tuple[str, Any]]) -> int:
        """Write a batch to its files (durably), then acknowledge it."""
        lines: dict[Path, list[tuple[str, bytes]]] = {}
        for entry_id, fields in entries:
            if fields:  # an entry deleted from the stream since: nothing left to write
                path = self.directory / project / f"{day_of(entry_id)}.jsonl"
                lines.setdefault(path, []).append((entry_id, _line(entry_id, fields)))
        written = sum(self._write(path, items) for path, items in lines.items())
        self._ack(key, [entry_id for entry_id, _ in entries])
        return written

    def _write(self, path: Path, items: list[tuple[str, bytes]]) -> int:
        ids = self._known(path)
        new = [(i, line) for i, line in items if i not in ids]
        if not new:
            return 0
        with path.open("ab") as f:
            f.write(b"".join(line for _, line in new))
            f.flush()
            os.fsync(f.fileno())
        ids.update(i for i, _ in new)
        return len(new)

    def _ack(self, key: str, ids: list[str]) -> None:
        self._call("xack", key, self.group, *ids)

    def _known(self, path: Path) -> set[str]:
        """The ids a file holds (read once; a torn last line, from a killed run, is cut)."""
        ids = self._ids.get(path)
        if ids is not None:
            return ids
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = set()
        if path.exists():
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                with path.open("r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
            for line in data[:end].splitlines():
                entry_id = _line_id(line)
                if entry_id is not None:
                    ids.add(entry_id)
        if len(self._ids) >= _CACHED_FILES:
            self._ids.pop(next(iter(self._ids)))
        self._ids[path] = ids
        return ids
