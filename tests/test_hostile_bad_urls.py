"""A DLQ or job store URL that urllib cannot even split (an unbalanced IPv6 bracket) is a
ConfigError naming the argument, with the password hidden; the CLI exits 2 without a traceback.

Found by the hostile tester (issue 7, defects 20 and 21): ``run_batches(dlq="postgresql://u:pw@[::1:5/x")``
raised a bare ``ValueError: Invalid IPv6 URL`` naming nothing, and every CLI command given such
a ``--dlq`` or ``--store`` died with a traceback and exit code 1 (which means "partial success").
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import batchguard
from batchguard.cli import main
from batchguard.errors import ConfigError

SECRET = "Sekr1tPw"
BAD = [f"postgresql://app:{SECRET}@[::1:5432/x", f"redis://:{SECRET}@[::1:6379/0",
       f"postgres://app:{SECRET}@db]:5432/x"]


@pytest.mark.parametrize("url", BAD)
def test_run_batches_names_the_dlq_url(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^dlq URL .*not a valid URL") as info:
        batchguard.run_batches([1], lambda r: r, dlq=url)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("url", [u for u in BAD if u.startswith("postgres")])
def test_run_batches_names_the_job_store_url(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^job store URL .*not a valid URL") as info:
        batchguard.run_batches([1], lambda r: r, job="j", store=url)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("args", [["dlq", "count", "--dlq", BAD[0]], ["dlq", "list", "--dlq", BAD[1]],
                                  ["jobs", "list", "--store", BAD[0]]])
def test_cli_exits_2_without_a_traceback(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "not a valid URL" in result.output
    assert SECRET not in result.output
