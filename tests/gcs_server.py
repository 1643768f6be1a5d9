"""A GCS-compatible server on 127.0.0.1 for the gs:// sources tests: gcp-storage-emulator.

``python tests/gcs_server.py`` starts the emulator (in memory) on a free port and prints
``PORT <n>`` once it listens; it serves until killed. It runs in its own process, as
tests/s3_server.py does moto, not on a thread of pytest's: pytest turns warnings into errors
process-wide, and a deprecation inside the emulator's request handler would become a 500.

:func:`gcs_server` (the ``gcs_endpoint`` fixture of tests/test_sources_gcs.py) starts it and
points gcsfs at it: ``STORAGE_EMULATOR_HOST`` (which gcsfs reads when a filesystem is made; CLI
subprocesses inherit it) and anonymous credentials. gcsfs's experimental zonal and hierarchical
bucket support (on by default in recent versions) asks a gRPC control plane for each bucket's layout,
which no emulator serves: every first access then waits out a 60 s retry before falling back.
The fixture turns it off (``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``, read when gcsfs is first
imported) and registers gcsfs's plain filesystem for ``gs://`` in case gcsfs was imported first.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator

import pytest

import child_server

ENVIRONMENT = {
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    "GOOGLE_CLOUD_PROJECT": "batchguard-test",
}


def gcs_server() -> Iterator[str]:
    """Start the server; yield its endpoint URL with gcsfs pointing at it."""
    for module in ("gcsfs", "gcp_storage_emulator"):
        if importlib.util.find_spec(module) is None:
            if os.environ.get("CI") == "true":
                raise ModuleNotFoundError(f"{module} is not installed (pip install -e '.[test]')")
            pytest.skip(f"{module} is not installed")
    child, port = child_server.start(__file__, "GCS emulator")
    assert child.stdout is not None
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        for key, value in {**ENVIRONMENT, "STORAGE_EMULATOR_HOST": endpoint}.items():
            env.setenv(key, value)
        import fsspec
        import gcsfs.core

        for protocol in ("gs", "gcs"):
            fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)
        gcsfs.core.GCSFileSystem.clear_instance_cache()  # none made for another endpoint survives
        try:
            yield endpoint
        finally:
            for protocol in ("gs", "gcs"):
                fsspec.register_implementation(protocol, "gcsfs.GCSFileSystem", clobber=True)
            gcsfs.core.GCSFileSystem.clear_instance_cache()
            child.kill()
            child.wait()
            child.stdout.close()


def _serve() -> None:
    import logging

    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)  # no line per request
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    print(f"PORT {server._api._httpd.server_address[1]}", flush=True)  # port 0: the OS chose
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    _serve()
