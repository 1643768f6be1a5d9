"""Real Redis and PostgreSQL servers for the tests.

A server already listening on 127.0.0.1 (Redis on 6379, PostgreSQL on 5432 as user ``postgres``,
or the URL in ``BATCHGUARD_TEST_REDIS_URL`` / ``BATCHGUARD_TEST_POSTGRES_URL``) is used as is;
otherwise a throwaway one is started on a free port and stopped at the end of the session.
A missing server binary skips the tests that need it, or fails them when ``CI=true``:
``bash .ci/services.sh`` installs both.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

INSTALL_HINT = "run `bash .ci/services.sh` (apt-get install redis-server postgresql)"
KNOWN_REDIS = ("redis://127.0.0.1:6379/0",)
KNOWN_POSTGRES = (
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgresql://postgres:postgres@127.0.0.1:5432/postgres",
)


def unavailable(message: str) -> None:
    """Skip, or fail under CI, where every test must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run these tests: {INSTALL_HINT}", pytrace=False)
    pytest.skip(f"{message}; {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def wait_for(ready: Callable[[], bool], seconds: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    pytest.fail(f"{what} did not become ready in {seconds:.0f}s\n{tail}", pytrace=False)


# -- Redis ---------------------------------------------------------------------------------------

def redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def redis_server() -> Iterator[str]:
    """Yield the URL of a reachable Redis server for the whole session."""
    try:
        import redis  # noqa: F401
    except ImportError:
        unavailable("the redis package is not installed (pip install redis)")
    candidates = [os.environ["BATCHGUARD_TEST_REDIS_URL"]] if "BATCHGUARD_TEST_REDIS_URL" in os.environ else []
    if port_open(6379):
        candidates += KNOWN_REDIS
    for url in candidates:
        if redis_answers(url):
            yield url
            return
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
        return
    workdir = Path(tempfile.mkdtemp(prefix="batchguard-redis-"))
    port = free_port()
    log = workdir / "redis.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(workdir)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: (proc.poll() is None and redis_answers(url)) or _exited(proc, log, "redis-server"),
                 20, "redis-server", log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _exited(proc: subprocess.Popen[bytes], log: Path, what: str) -> bool:
    if proc.poll() is not None:
        pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}",
                    pytrace=False)
    return False


# -- PostgreSQL ----------------------------------------------------------------------------------

def postgres_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def postgres_bindir() -> Path | None:
    """The directory of initdb/pg_ctl: PATH first, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found is not None:
        bindir = Path(found).resolve().parent
        if (bindir / "pg_ctl").exists():
            return bindir
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _as_postgres(cmd: Sequence[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the `postgres` system user then."""
    if os.geteuid() != 0:
        return list(cmd)
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(cmd)]


def _run(cmd: Sequence[str], cwd: Path, what: str) -> None:
    result = subprocess.run(_as_postgres(cmd), cwd=cwd, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}",
                    pytrace=False)


def postgres_server() -> Iterator[str]:
    """Yield the URL of a reachable PostgreSQL database for the whole session."""
    try:
        import psycopg
    except ImportError:
        unavailable("the psycopg package is not installed (pip install 'psycopg[binary]')")
        return
    candidates = ([os.environ["BATCHGUARD_TEST_POSTGRES_URL"]]
                  if "BATCHGUARD_TEST_POSTGRES_URL" in os.environ else [])
    if port_open(5432):
        candidates += KNOWN_POSTGRES
    for url in candidates:
        if postgres_answers(url):
            yield url
            return
    bindir = postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL (initdb, pg_ctl) is not installed")
        return
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no `postgres` user to run PostgreSQL as")
            return
    workdir = Path(tempfile.mkdtemp(prefix="batchguard-pg-"))
    if os.geteuid() == 0:
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    data, log, port = workdir / "data", workdir / "postgres.log", free_port()
    _run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
          "--locale=C", "--no-sync"], workdir, "initdb")
    # fsync off: these databases are thrown away, and the tests check our commits, not the disk's.
    options = (f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
               f"-c synchronous_commit=off -c full_page_writes=off")
    try:
        _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options,
              "start"], workdir, f"pg_ctl start (log: {log})")
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        wait_for(lambda: postgres_answers(admin), 30, "PostgreSQL", log)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE batchguard_test")
        yield f"postgresql://postgres@127.0.0.1:{port}/batchguard_test"
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                     "stop"]), cwd=workdir, capture_output=True, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)
