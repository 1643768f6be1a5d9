"""Write throughput of the dead-letter queues, in entries per second.

    python benches/bench_dlq.py [--quick] [--entries 200000] [--batch 1000]

Sends ``--entries`` fresh entries in batches of ``--batch`` (one ``send`` per batch, as the
engine does) to each local backend and prints a table. "encode only" is the JSON encoding every
durable backend pays per entry, measured alone: it bounds what any of them can reach. Set
BATCHGUARD_BENCH_REDIS_URL / BATCHGUARD_BENCH_POSTGRES_URL to include those servers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

from batchguard.dlq import (
    Attempt,
    DeadLetter,
    JsonlDLQ,
    MemoryDLQ,
    PostgresDLQ,
    RedisDLQ,
    SqliteDLQ,
)


def make_entries(n: int, run_id: str = "bench-run") -> list[DeadLetter]:
    """Entries shaped like a failure-heavy run's: small JSON payload, one attempt, no traceback."""
    return [
        DeadLetter(
            id=f"{run_id}:{i}", run_id=run_id, job_id=None, record_id=i, record_index=i,
            batch_index=i // 1000, stage="process",
            payload={"id": i, "email": f"user{i}@example.com", "amount": i * 0.25, "tags": ["a", "b"]},
            payload_encoding="json", error_class="permanent", error_type="ValueError",
            error_message=f"invalid amount for record {i}", traceback=None,
            attempts=(Attempt(1, "2024-06-01T12:00:00+00:00", "ValueError",
                              f"invalid amount for record {i}", None),),
            first_failed_at="2024-06-01T12:00:00+00:00", last_failed_at="2024-06-01T12:00:00+00:00",
        )
        for i in range(n)
    ]


def throughput(send: Callable[[Sequence[DeadLetter]], object], entries: list[DeadLetter],
               batch: int) -> float:
    batches = [entries[i:i + batch] for i in range(0, len(entries), batch)]
    gc.collect()
    started = time.perf_counter()
    for chunk in batches:
        send(chunk)
    return len(entries) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 entries: a smoke run")
    parser.add_argument("--entries", type=int, default=None, help="entries per backend (200,000)")
    parser.add_argument("--batch", type=int, default=1000, help="entries per send (1,000)")
    args = parser.parse_args(argv)
    if args.entries is None:
        args.entries = 20_000 if args.quick else 200_000
    entries = make_entries(args.entries)
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    rows: list[tuple[str, float]] = []

    with tempfile.TemporaryDirectory(prefix="batchguard-bench-") as tmp:
        cases: list[tuple[str, Callable[[], object]]] = [
            ("MemoryDLQ", MemoryDLQ),
            ("encode only (to_dict + json)", lambda: None),
            ("SqliteDLQ (synchronous=FULL)", lambda: SqliteDLQ(Path(tmp) / "full.db")),
            ("SqliteDLQ (synchronous=NORMAL)",
             lambda: SqliteDLQ(Path(tmp) / "normal.db", synchronous="NORMAL")),
            ("JsonlDLQ (fsync per send)", lambda: JsonlDLQ(Path(tmp) / "dlq.jsonl")),
        ]
        if url := os.environ.get("BATCHGUARD_BENCH_REDIS_URL"):
            cases.append(("RedisDLQ", lambda: RedisDLQ(url, key_prefix=f"bench:{os.getpid()}")))
        if pg := os.environ.get("BATCHGUARD_BENCH_POSTGRES_URL"):
            cases.append(("PostgresDLQ", lambda: PostgresDLQ(pg, table=f"bench_{os.getpid()}")))
        for name, factory in cases:
            queue = factory()
            if queue is None:
                rate = throughput(lambda chunk: [encoder(e.to_dict()) for e in chunk], entries, args.batch)
            else:
                rate = throughput(queue.send, entries, args.batch)  # type: ignore[attr-defined]
                assert queue.count() == len(entries), name  # type: ignore[attr-defined]
                if isinstance(queue, RedisDLQ):
                    queue.remove(e.id for e in entries)
                    queue._require_client().delete(f"{queue.key_prefix}:seq")
                if isinstance(queue, PostgresDLQ):
                    queue.connection.execute(f"DROP TABLE {queue.table}")
                queue.close()  # type: ignore[attr-defined]
            rows.append((name, rate))

    print(f"{args.entries:,} entries in batches of {args.batch:,} (Python {sys.version.split()[0]})")
    width = max(len(name) for name, _ in rows)
    print(f"{'backend':<{width}}  {'entries/s':>12}")
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:>12,.0f}")


if __name__ == "__main__":
    main()
