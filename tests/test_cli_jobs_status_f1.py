"""Issue 9 item 5 (review): ``jobs status`` printed ``--fn MODULE:CALLABLE`` although the job saved
its --fn; ``jobs status --record`` exited 0 for a record it could not place (UNKNOWN); and a record
id read from the input (an int) was printed ``Record 160`` where one given on the command line
was ``Record '161'``."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli_jobs_i9 import cli, fns, skus, stopped_job

__all__ = ["fns"]  # the fixture, used by name


def test_status_and_record_commands_carry_the_jobs_saved_fn(fns: Path) -> None:
    stopped_job(fns)
    status = cli("jobs", "status", "nightly")
    assert "Retry failed: batchguard jobs retry-failed nightly --fn i9fns:sku_fail" in status.output, status.output
    record = cli("jobs", "status", "nightly", "--record", "SKU-0007")
    assert "--fn i9fns:sku_fail" in record.output and "MODULE:CALLABLE" not in record.output, record.output


def test_a_record_it_cannot_place_exits_1(fns: Path) -> None:
    stopped_job(fns)
    unknown = cli("jobs", "status", "nightly", "--record", "SKU-9999")
    assert "UNKNOWN" in unknown.output and unknown.exit_code == 1, unknown.output
    assert cli("jobs", "status", "nightly", "--record", "SKU-0008").exit_code == 0


def test_a_record_id_is_quoted_one_way_whether_read_from_the_input_or_not(fns: Path) -> None:
    path = Path(skus(fns, 12))
    path.write_text("".join(json.dumps({"id": i, "n": i}) + "\n" for i in range(12)))
    result = cli("run", str(path), "--fn", "i9fns:sku_fail", "--job", "ints", "--id-field", "id",
                 "--max-attempts", "1", "-q")
    assert result.exit_code in (0, 1), result.output
    found = cli("jobs", "status", "ints", "--record", "7")
    missing = cli("jobs", "status", "ints", "--record", "70")
    assert "Record '7' of job 'ints'" in found.output, found.output
    assert "Record '70' of job 'ints'" in missing.output, missing.output
