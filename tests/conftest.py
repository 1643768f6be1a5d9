"""Shared fixtures. The database servers behind `redis_url` and `postgres_url` live in servers.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import servers


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server (reused on 127.0.0.1:6379, or started for the session)."""
    yield from servers.redis_server()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database (reused on 127.0.0.1:5432, or started for the session)."""
    yield from servers.postgres_server()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory (where the CLI's batchguard.db goes) with tests/ importable
    (the CLI tests' ``--fn cli_fns:...``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    return tmp_path


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of a real S3-compatible server on 127.0.0.1 (moto's ThreadedMotoServer, in
    its own process), with AWS_ENDPOINT_URL and test credentials set for boto3, s3fs and the CLI
    subprocesses (see s3_server.py)."""
    import s3_server

    yield from s3_server.s3_server()
