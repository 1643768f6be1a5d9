"""An S3-compatible server on 127.0.0.1 for the sources tests: moto in server mode.

``python tests/s3_server.py`` starts moto's ThreadedMotoServer on a free port and prints
``PORT <n>`` once it answers; it serves until killed. It runs in its own process, not a thread of
pytest's: pytest turns warnings into errors process-wide (a deprecation inside moto would become
a 500), and the tests SIGKILL CLI subprocesses that talk to it.

:func:`s3_server` (the conftest's ``s3_endpoint`` fixture) starts it, points boto3 and s3fs at
it through the environment (``AWS_ENDPOINT_URL``, test credentials; subprocesses inherit them)
and stops it at the end of the session.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

import child_server

ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def s3_server() -> Iterator[str]:
    """Start the server; yield its endpoint URL with the environment pointing at it."""
    try:
        import moto.server  # noqa: F401 - only checks that moto[server] is installed
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"moto[server] is not installed: {exc}")
    child, port = child_server.start(__file__, "moto server")
    assert child.stdout is not None
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        for key, value in {**ENVIRONMENT, "AWS_ENDPOINT_URL": endpoint}.items():
            env.setenv(key, value)
        try:
            yield endpoint
        finally:
            child.kill()
            child.wait()
            child.stdout.close()


def _serve() -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request in the test output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(f"PORT {server._server.server_port}", flush=True)  # type: ignore[attr-defined]  # port 0: the OS chose
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    _serve()
