"""A source file's URL may hold secrets (a presigned query, credentials in the netloc): its
repr shows the redacted name only (found by the session's review: the dataclass repr showed
``url``)."""

from __future__ import annotations

from batchguard.sources.files import SourceFile


def test_a_source_files_repr_leaves_its_url_out() -> None:
    file = SourceFile(url="https://user:hunter2@example.test/a.jsonl.gz?X-Amz-Signature=deadbeef",
                      shown="https://example.test/a.jsonl.gz", size=10, version="etag",
                      compression="gzip", remote=True)
    shown = repr(file)
    assert "hunter2" not in shown and "deadbeef" not in shown and "user" not in shown
    assert "https://example.test/a.jsonl.gz" in shown and "gzip" in shown
