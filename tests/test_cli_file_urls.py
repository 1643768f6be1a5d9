"""The CLI reads a sqlite:/// or jsonl:/// URL by the one path rule of ``batchguard._urls`` (the
rule ``open_dlq`` and ``open_job_store`` follow): %-escapes are decoded, so the file the CLI
checks for, and the absolute URL a job saves for ``jobs resume``, name the file the backend opens.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from batchguard._urls import parse_url
from batchguard.cli import main
from batchguard.cli.options import absolute_url, file_of


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_file_of_decodes_the_path_as_the_backends_do(workdir: Path) -> None:
    assert file_of("sqlite:///my%20queue.db") == Path("my queue.db")
    assert file_of("jsonl:////abs/100%25.jsonl") == Path("/abs/100%.jsonl")
    assert file_of("sqlite:///%2Fabs/x.db") == Path("/abs/x.db")
    assert file_of("redis://localhost/0") is None


def test_an_absolute_url_names_the_same_file_to_the_backends(workdir: Path) -> None:
    """What ``batchguard run --job`` saves for ``jobs resume``, run from another directory."""
    for name in ("my queue.db", "100%.db", "what?.db", "a#b.db", "plain.db"):
        url = absolute_url("sqlite:///" + name.replace("%", "%25").replace(" ", "%20").replace("?", "%3F"))
        opened = parse_url(url, label="dlq URL", schemes=("sqlite",), hint="").file_path()
        assert opened == str(workdir / name), url


def test_dlq_commands_open_a_queue_whose_url_escapes_its_file_name(workdir: Path) -> None:
    (workdir / "in.jsonl").write_text("\n".join(json.dumps({"id": i}) for i in range(4)) + "\n")
    ran = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--max-attempts", "1",
                 "--dlq", "sqlite:///my%20queue.db")
    assert ran.exit_code == 1, ran.output
    assert (workdir / "my queue.db").exists()
    counted = invoke("dlq", "count", "--dlq", "sqlite:///my%20queue.db")
    assert (counted.exit_code, counted.output.strip()) == (0, "2")
