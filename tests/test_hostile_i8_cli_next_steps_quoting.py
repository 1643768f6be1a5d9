"""The commands the CLI prints for the user to paste (the report's next steps, ``jobs status``'s
"Resume with", the interrupt hint) are shell-quoted: a ``--dlq`` / ``--store`` URL or a job name
holding a space, ``;``, ``&`` or ``$`` comes back as the same single argument (hostile tester,
issue 8).

Before the fix they were pasted in raw: ``--dlq sqlite:///my dlq.db`` split into two arguments,
and ``--dlq sqlite:///a&b;rm.db`` ran ``rm.db`` as a second command when pasted.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from click.testing import CliRunner, Result

from batchguard._report.model import CliContext, build
from batchguard.cli import main
from batchguard.cli.options import DEFAULT_URL, url_flag


def invoke(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, env=env, catch_exceptions=False)


def write_jsonl(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))


def commands(output: str) -> list[list[str]]:
    """Every ``batchguard ...`` command in ``output``, split as a shell would."""
    found = []
    for line in output.splitlines():
        at = line.find("batchguard ")
        if at >= 0 and ("--dlq" in line or "--store" in line or "jobs resume" in line):
            found.append(shlex.split(line[at:]))
    return found


DLQ = "sqlite:///my dead;letters&$HOME.db"
STORE = "sqlite:///my jobs $(id).db"
JOB = "nightly run; echo pwned"


def test_next_steps_quote_the_dlq_url(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 6)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--dlq", DLQ, "--max-attempts", "1")
    assert result.exit_code == 1, result.output
    found = commands(result.output)
    assert found, result.output
    for argv in found:
        assert argv[argv.index("--dlq") + 1] == DLQ, argv
    # `dlq list`'s own "details:" line, too
    listed = invoke("dlq", "list", "--dlq", DLQ)
    details = commands(listed.output)
    assert details and all(argv[argv.index("--dlq") + 1] == DLQ for argv in details), listed.output


def test_a_stopped_jobs_resume_command_quotes_its_name_and_store(workdir: Path) -> None:
    write_jsonl(workdir / "in.jsonl", 40)
    result = invoke("run", "in.jsonl", "--fn", "cli_fns:fatal_when_asked", "--job", JOB,
                    "--store", STORE, "--batch-size", "10", env={"BG_FATAL_AT": "25"})
    assert result.exit_code == 1 and "ABORTED" in result.output, result.output
    resume = [argv for argv in commands(result.output) if argv[1:3] == ["jobs", "resume"]]
    assert resume, result.output
    assert resume[0][3] == JOB and resume[0][resume[0].index("--store") + 1] == STORE, resume
    status = invoke("jobs", "status", JOB, "--store", STORE)
    resume = [argv for argv in commands(status.output) if argv[1:3] == ["jobs", "resume"]]
    assert resume and resume[0][3] == JOB, status.output
    assert resume[0][resume[0].index("--store") + 1] == STORE, status.output


def test_plain_urls_stay_unquoted() -> None:
    assert url_flag("--dlq", "sqlite:///dead.db") == " --dlq sqlite:///dead.db"
    assert url_flag("--dlq", DEFAULT_URL) == ""
    context = CliContext(dlq_url="sqlite:///dead.db", store_url=None, default_url=DEFAULT_URL)
    assert context.flag("--dlq", "sqlite:///dead.db") == " --dlq sqlite:///dead.db"
    assert context.flag("--dlq", DEFAULT_URL) == ""
    assert build  # the model the CLI renders: its commands are the ones checked above


def test_the_stdin_resume_hint_quotes_the_job_name(workdir: Path) -> None:
    # Added after the first fix: `jobs resume` of a job that read stdin says how to pipe it again.
    invoke("run", "-", "--fn", "cli_fns:fatal_when_asked", "--job", JOB,
           env={"BG_FATAL_AT": "1"}, stdin='{"id": 1}\n')
    result = invoke("jobs", "resume", JOB)
    assert result.exit_code == 2 and "read its input from stdin" in result.output, result.output
    hint = result.output[result.output.index("batchguard run -"):].splitlines()[0]
    argv = shlex.split(hint)
    assert argv[argv.index("--job") + 1] == JOB, argv
    assert argv[argv.index("--fn") + 1] == "cli_fns:fatal_when_asked", argv
