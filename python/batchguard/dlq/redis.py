"""A dead-letter queue in Redis: shared by every worker that can reach the server."""

from __future__ import annotations

import builtins
import json
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, Final, cast

from .._checks import check_duration
from .._urls import redact, require_module
from ..errors import ConfigError, DLQError, DLQUnavailableError
from .base import FILTER_FIELDS, DeadLetter, Decide, QueueBase, check_page, select, write_jsonl
from .codec import dumps
from .entry import STATUSES
from .status import DEFAULT_STATUS

if TYPE_CHECKING:
    import redis

__all__ = ["RedisDLQ"]

_PAGE: Final = 1000
_WATCH_TRIES: Final = 50
_MIN_VERSION: Final = (6, 2)  # ZINTER, which orders filtered ids by their sequence number

def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


# The status is indexed for the closed statuses only: an entry is open unless one of their sets
# holds it. New entries cost no index write, and entries stored before statuses existed (or by
# an older batchguard still writing to the queue) are open without a migration.
_INDEXED: Final = (*FILTER_FIELDS, "status")
_CLOSED: Final = tuple(status for status in STATUSES if status != DEFAULT_STATUS)


# KEYS: the entries hash, the order zset, the sequence counter, then the index sets the moves
# name (by position). ARGV: n, n (id, "1" and the value read | "0" and "" when absent); m, m
# (id, new value) pairs; z, z new ids (ordered by fresh sequence numbers, NX); g, g groups of
# (SREM|SADD, key position, c, c ids). Writes nothing and returns 0 when an entry no longer
# holds what was read. A command takes at most 1000 values from ARGV at once (Lua's unpack).
_COMPARE_AND_SET: Final = """
local i = 1
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if ARGV[i + 1] == '1' then
    if current ~= ARGV[i + 2] then return 0 end
  elseif current then
    return 0
  end
  i = i + 3
end
local m = tonumber(ARGV[i]); i = i + 1
for s = 0, m - 1, 500 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i + 2 * s, i + 2 * math.min(s + 499, m - 1) + 1))
end
i = i + 2 * m
local z = tonumber(ARGV[i]); i = i + 1
if z > 0 then
  local first = redis.call('INCRBY', KEYS[3], z) - z + 1
  for j = 0, z - 1 do
    redis.call('ZADD', KEYS[2], 'NX', first + j, ARGV[i + j])
  end
  i = i + z
end
local g = tonumber(ARGV[i]); i = i + 1
for _ = 1, g do
  local op, key, c = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  i = i + 3
  for s = 0, c - 1, 1000 do
    redis.call(op, key, unpack(ARGV, i + s, i + math.min(s + 999, c - 1)))
  end
  i = i + c
end
return 1
"""



def _fields(data: dict[str, Any]) -> tuple[Any, ...]:
    """The indexed values of a stored entry (None: not indexed), in ``_INDEXED`` order."""
    status = data.get("status")
    return (*(None if data.get(name) is None else str(data[name]) for name in FILTER_FIELDS),
            None if status in (None, DEFAULT_STATUS) else str(status))


def _entry_fields(entry: DeadLetter) -> tuple[Any, ...]:
    """:func:`_fields` of the entry about to be stored, read from its attributes."""
    return (entry.run_id, entry.job_id, entry.stage, str(entry.error_class), entry.error_type,
            None if entry.status == DEFAULT_STATUS else entry.status)


class RedisDLQ(QueueBase):
    """Dead letters in Redis (>= 6.2) under ``key_prefix``; safe to share between threads and processes.

    Keys, for the default prefix ``batchguard:dlq``:

    * ``batchguard:dlq:entries`` -- hash, id -> entry JSON
    * ``batchguard:dlq:order`` -- sorted set, id -> sequence number of its first send (``list`` order)
    * ``batchguard:dlq:seq`` -- the counter the sequence numbers come from (``INCRBY``)
    * ``batchguard:dlq:idx:<field>:<value>`` -- set of the ids whose filter field has that value
    * ``batchguard:dlq:idx:status:resolved``, ``...:replayed`` -- the ids with that status; an
      entry in neither is open (so entries stored before statuses existed read as open)

    so a filtered ``count`` is one ``SCARD``/``SINTERCARD`` and a filtered ``list`` one ``ZINTER``,
    never a scan. Each ``send`` and status change is one server-side script that writes only if
    the entries it read are unchanged (else it reads again), and each ``remove`` one
    ``MULTI``/``EXEC`` transaction guarded by ``WATCH`` on the hash, so that writers in other
    processes cannot leave an index stale.

    Durability is the server's: ``send`` returns once Redis has applied the transaction, and an
    entry survives a Redis restart only as far as its persistence settings allow
    (``appendonly yes`` with ``appendfsync always`` for the strict contract).

    >>> q = RedisDLQ("redis://localhost:6379/0")  # doctest: +SKIP
    >>> q.count(run_id="nightly-2024-06-01")  # doctest: +SKIP
    0
    """

    def __init__(self, url: str, key_prefix: str = "batchguard:dlq", *,
                 connect_timeout: float = 2.0, timeout: float = 10.0) -> None:
        """Connect to ``url`` and check the server answers (fails fast: DLQUnavailableError).

        ``connect_timeout`` and ``timeout`` (for each command) are in seconds.
        """
        redis_lib = require_module("redis", needed_by="RedisDLQ", extra="redis")
        from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
        from redis.retry import Retry

        check_duration("RedisDLQ connect_timeout", connect_timeout, positive=True)
        check_duration("RedisDLQ timeout", timeout, positive=True)
        if not key_prefix:
            raise ConfigError("key_prefix must be a non-empty string")
        self.url = redact(url)
        self.key_prefix = key_prefix
        self._entries_key = f"{key_prefix}:entries"
        self._order_key = f"{key_prefix}:order"
        self._seq_key = f"{key_prefix}:seq"
        self._lock = threading.Lock()
        self._redis_errors: tuple[type[BaseException], ...] = (redis_lib.RedisError, OSError)
        self._watch_error: type[BaseException] = redis_lib.WatchError
        self._cas_script: Any = None  # registered at the first swap
        try:
            # No retries for the first contact, so that an unreachable server fails at once.
            client = redis_lib.Redis.from_url(
                url, socket_connect_timeout=connect_timeout, socket_timeout=timeout,
                decode_responses=True, retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL {self.url!r}: {exc}") from exc
        self._client: redis.Redis | None = client
        try:
            client.ping()
            version = _version(str(client.info("server").get("redis_version", "0")))
        except self._redis_errors as exc:
            client.close()
            self._client = None
            raise DLQUnavailableError(
                f"cannot reach the Redis dead-letter queue at {self.url}: {exc}"
            ) from exc
        if version < _MIN_VERSION:
            client.close()
            self._client = None
            raise DLQUnavailableError(
                f"the Redis dead-letter queue at {self.url} needs Redis >= 6.2, "
                f"the server is {'.'.join(map(str, version))}"
            )
        self._has_sintercard = version >= (7, 0)
        client.set_retry(Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.01), 3))

    def __repr__(self) -> str:
        state = "closed" if self._client is None else "open"
        return f"RedisDLQ({self.url!r}, key_prefix={self.key_prefix!r}, {state})"

    def __iter__(self) -> Iterator[DeadLetter]:
        return self.iter()

    # -- the DeadLetterQueue protocol -------------------------------------------------------

    def send(self, entries: Sequence[DeadLetter]) -> None:
        """Upsert ``entries`` by id in one atomic step (see :meth:`_write_checked`)."""
        if not entries:
            return
        latest: dict[str, DeadLetter] = {}
        for entry in entries:  # a later duplicate in one batch wins, as it would sent alone
            latest[entry.id] = entry
        ids = list(latest)
        encoded = {entry_id: dumps(entry).decode() for entry_id, entry in latest.items()}
        with self._errors("send"), self._lock:
            for _ in range(_WATCH_TRIES):
                if self._write_checked(dict(zip(ids, self._read(ids), strict=True)), latest, encoded):
                    return
            raise DLQError(f"Redis dead-letter queue {self.url} ({self.key_prefix}): send kept conflicting "
                           f"with other writers of the same entries ({_WATCH_TRIES} tries)")

    def _read(self, ids: builtins.list[str]) -> builtins.list[str | None]:
        """What ``ids`` hold now (None: absent), read a page at a time."""
        client = self._require_client()
        old: builtins.list[str | None] = []
        for start in range(0, len(ids), _PAGE):
            old.extend(cast("builtins.list[str | None]", client.hmget(self._entries_key, ids[start:start + _PAGE])))
        return old

    def _write_checked(self, read: dict[str, str | None], changed: dict[str, DeadLetter],
                       encoded: dict[str, str] | None = None) -> bool:
        """Write ``changed`` (``encoded``: their JSON, when already made), with the sequence
        numbers of the new ones and the index moves, if every entry of ``read`` still holds
        what was read (None: still absent); False, writing nothing, if one does not.

        One server-side script, a compare-and-set of the entries read rather than a WATCH of
        the whole entries hash: a WATCH failed whenever any entry of the queue was written, so
        a big write (a run's batch of a thousand dead letters, a replay's claim of a page)
        never got through while other runs dead-lettered into the same queue."""
        moves: dict[tuple[str, str], builtins.list[str]] = defaultdict(list)  # (op, index key): ids
        for entry_id, entry in changed.items():
            before = read[entry_id]
            previous = _fields(json.loads(before)) if before is not None else (None,) * len(_INDEXED)
            for name, was, now in zip(_INDEXED, previous, _entry_fields(entry), strict=True):
                if was == now:
                    continue
                if was is not None:
                    moves["SREM", self._index_key(name, was)].append(entry_id)
                if now is not None:
                    moves["SADD", self._index_key(name, now)].append(entry_id)
        keys: dict[str, int] = {self._entries_key: 1, self._order_key: 2, self._seq_key: 3}  # Lua is 1-based
        args: builtins.list[Any] = [len(read)]
        for entry_id, before in read.items():
            args += [entry_id, "0", ""] if before is None else [entry_id, "1", before]
        args.append(len(changed))
        for entry_id, entry in changed.items():
            args += [entry_id, encoded[entry_id] if encoded is not None else dumps(entry).decode()]
        new_ids = [entry_id for entry_id in changed if read[entry_id] is None]
        args += [len(new_ids), *new_ids, len(moves)]
        for (op, key), members in moves.items():
            args += [op, keys.setdefault(key, len(keys) + 1), len(members), *members]
        script = self._cas_script
        if script is None:
            script = self._cas_script = self._require_client().register_script(_COMPARE_AND_SET)
        return bool(script(keys=list(keys), args=args))

    def count(self, *, status: str | None = DEFAULT_STATUS, **filters: Any) -> int:
        """How many entries match ``filters`` (exact matches on FILTER_FIELDS) and ``status``.

        Open entries are the matching ones less those in a closed status's set: a few set
        cardinalities in one MULTI/EXEC, never a scan.
        """
        wanted = select(filters, status)
        chosen = wanted.pop("status", None)
        keys: builtins.list[Any] = [self._index_key(name, value) for name, value in wanted.items()]
        with self._errors("count"):
            if chosen is None:
                return self._cards([keys])[0]
            if chosen != DEFAULT_STATUS:
                return self._cards([[*keys, self._index_key("status", chosen)]])[0]
            total, *closed = self._cards([keys, *([*keys, self._index_key("status", c)] for c in _CLOSED)])
            return total - sum(closed)

    def list(self, *, limit: int | None = None, offset: int = 0, status: str | None = DEFAULT_STATUS,
             **filters: Any) -> builtins.list[DeadLetter]:
        """Matching entries in the order of their first send, paged by ``limit``/``offset``."""
        wanted = select(filters, status)
        check_page(limit, offset)
        if limit == 0:
            return []
        with self._errors("list"):
            client = self._require_client()
            wanted, only_open = self._open_filter(wanted)
            if wanted or only_open:
                ids = self._matching_ids(wanted) if wanted else cast(
                    "builtins.list[str]", client.zrange(self._order_key, 0, -1))
                if only_open:
                    ids = self._drop_closed(ids)
                ids = ids[offset:None if limit is None else offset + limit]
            else:
                end = -1 if limit is None else offset + limit - 1
                ids = cast("builtins.list[str]", client.zrange(self._order_key, offset, end))
            return self._load(ids)

    def get(self, entry_id: str) -> DeadLetter | None:
        """The entry with this id, or None."""
        with self._errors("get"):
            text = self._require_client().hget(self._entries_key, entry_id)
        return None if text is None else DeadLetter.from_json(text)

    def remove(self, ids: Iterable[str]) -> int:
        """Delete the entries with these ids; unknown ids are ignored. Returns how many went."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return 0
        removed = 0

        def write(pipe: redis.client.Pipeline, old: builtins.list[str | None]) -> None:
            nonlocal removed
            present = [(entry_id, before) for entry_id, before in zip(wanted, old, strict=True) if before is not None]
            removed = len(present)
            drops: defaultdict[str, list[str]] = defaultdict(list)
            for entry_id, before in present:
                for name, value in zip(_INDEXED, _fields(json.loads(before)), strict=True):
                    if value is not None:
                        drops[self._index_key(name, value)].append(entry_id)
            pipe.multi()
            if present:
                gone = [entry_id for entry_id, _ in present]
                pipe.hdel(self._entries_key, *gone)
                pipe.zrem(self._order_key, *gone)
                for key, members in drops.items():
                    pipe.srem(key, *members)

        self._transaction("remove", wanted, write)
        return removed

    def export(self, path: str | os.PathLike[str] | IO[str], *, overwrite: bool = False,
               status: str | None = DEFAULT_STATUS, **filters: Any) -> int:
        """Write the matching entries as JSON lines to a new file, or a text stream; returns how
        many. Refuses an existing file unless ``overwrite=True``; see
        :func:`~batchguard.dlq.base.write_jsonl`."""
        wanted = select(filters, status)
        with self._errors("export"):
            return write_jsonl(path, self._iter(wanted), overwrite=overwrite)

    def close(self) -> None:
        """Close the connections; further calls raise DLQError. Closing twice is fine."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- internals -----------------------------------------------------------------------------

    def _index_key(self, name: str, value: Any) -> str:
        return f"{self.key_prefix}:idx:{name}:{value}"

    def _require_client(self) -> redis.Redis:
        if self._client is None:
            raise DLQError(f"Redis dead-letter queue {self.url} ({self.key_prefix}) is closed")
        return self._client

    def _transaction(self, action: str, ids: builtins.list[str],
                     write: Callable[[redis.client.Pipeline, builtins.list[str | None]], None]) -> None:
        """WATCH the hash, read the entries ``ids`` had, let ``write`` queue the changes, EXEC.

        The thread lock spares threads of this process from racing each other; WATCH catches
        writers elsewhere, and the read-queue-exec cycle is retried when one got in between.
        """
        with self._errors(action), self._lock:
            with self._require_client().pipeline(transaction=True) as pipe:
                for _ in range(_WATCH_TRIES):
                    try:
                        pipe.watch(self._entries_key)  # type: ignore[no-untyped-call]
                        old: builtins.list[str | None] = []
                        for start in range(0, len(ids), _PAGE):
                            chunk = pipe.hmget(self._entries_key, ids[start:start + _PAGE])
                            old.extend(cast("builtins.list[str | None]", chunk))
                        write(pipe, old)
                        pipe.execute()
                        return
                    except self._watch_error:
                        pipe.reset()
                raise DLQError(
                    f"Redis dead-letter queue {self.url} ({self.key_prefix}): {action} kept "
                    f"conflicting with other writers ({_WATCH_TRIES} tries)"
                )

    def _matching_ids(self, wanted: dict[str, Any]) -> builtins.list[str]:
        keys = {self._order_key: 1}
        keys.update({self._index_key(name, value): 0 for name, value in wanted.items()})
        # The weights make each id's score its sequence number, so ZINTER returns them in order.
        return cast("builtins.list[str]", self._require_client().zinter(keys, aggregate="SUM"))

    def _load(self, ids: builtins.list[str]) -> builtins.list[DeadLetter]:
        client = self._require_client()
        found: builtins.list[DeadLetter] = []
        for start in range(0, len(ids), _PAGE):
            for text in client.hmget(self._entries_key, ids[start:start + _PAGE]):
                if text is not None:  # removed since the ids were read
                    found.append(DeadLetter.from_json(text))
        return found

    def _iter(self, wanted: dict[str, Any]) -> Iterator[DeadLetter]:
        wanted, only_open = self._open_filter(wanted)
        if wanted:
            ids = self._matching_ids(wanted)
            for start in range(0, len(ids), _PAGE):
                page = ids[start:start + _PAGE]
                yield from self._load(self._drop_closed(page) if only_open else page)
            return
        after = "-inf"
        while True:
            # Keyset pages (by sequence number): removals between pages shift nothing.
            scored = cast("builtins.list[tuple[str, float]]", self._require_client().zrangebyscore(
                self._order_key, after, "+inf", start=0, num=_PAGE, withscores=True))
            page = [entry_id for entry_id, _ in scored]
            yield from self._load(self._drop_closed(page) if only_open else page)
            if len(scored) < _PAGE:
                return
            after = f"({int(scored[-1][1])}"

    def _swap(self, ids: builtins.list[str], decide: Decide) -> dict[str, DeadLetter]:
        """Read the entries, decide, write the changed ones if none of those read changed
        meanwhile (:meth:`_write_checked`); else read and decide again."""
        with self._errors("change"), self._lock:
            for _ in range(_WATCH_TRIES):
                read = {entry_id: before for entry_id, before in zip(ids, self._read(ids), strict=True)
                        if before is not None}
                found = {entry_id: DeadLetter.from_json(before) for entry_id, before in read.items()}
                changed = {entry_id: entry for entry_id, entry in decide(dict(found)).items() if entry_id in found}
                if not changed:
                    return found
                if self._write_checked(dict(read), changed):
                    found.update(changed)
                    return found
            raise DLQError(f"Redis dead-letter queue {self.url} ({self.key_prefix}): change kept conflicting "
                           f"with other writers of the same entries ({_WATCH_TRIES} tries)")

    def _open_filter(self, wanted: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The index filters for ``wanted`` and whether closed entries must be dropped from them.

        A closed status is a set like a filter field's; ``open`` is the absence from those sets,
        which only matters while some entry is closed."""
        chosen = wanted.get("status")
        if chosen != DEFAULT_STATUS:
            return wanted, False
        rest = {name: value for name, value in wanted.items() if name != "status"}
        closed = self._cards([[self._index_key("status", c)] for c in _CLOSED])
        return rest, any(closed)

    def _drop_closed(self, ids: builtins.list[str]) -> builtins.list[str]:
        """``ids`` without the ones in a closed status's set, in their order."""
        if not ids:
            return ids
        with self._require_client().pipeline(transaction=False) as pipe:
            for status in _CLOSED:
                pipe.smismember(self._index_key("status", status), ids)
            flags = pipe.execute()
        return [entry_id for entry_id, *closed in zip(ids, *flags, strict=True) if not any(closed)]

    def _cards(self, key_sets: builtins.list[builtins.list[Any]]) -> builtins.list[int]:
        """How many ids each set of index keys holds in common (no keys: every entry), read in
        one MULTI/EXEC so the numbers agree with each other."""
        with self._require_client().pipeline(transaction=True) as pipe:
            for keys in key_sets:
                if not keys:
                    pipe.hlen(self._entries_key)
                elif len(keys) == 1:
                    pipe.scard(keys[0])
                elif self._has_sintercard:
                    pipe.sintercard(len(keys), keys)
                else:
                    pipe.sinter(keys)
            return [n if isinstance(n, int) else len(n) for n in pipe.execute()]

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except DLQError:
            raise
        except self._redis_errors as exc:
            raise DLQError(
                f"Redis dead-letter queue {self.url} ({self.key_prefix}): {action} failed: {exc}"
            ) from exc
