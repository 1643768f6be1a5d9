"""Sources: records read lazily from local files, ``s3://``, ``gs://``, ``http(s)://`` and globs.

``batchguard.read(url_or_glob, format=None, **storage_options)`` is the entry point; see
:func:`read`. Layout: ``files`` (expanding a glob or URL to files, opening and decompressing),
``text`` (JSON lines, CSV, JSON arrays), ``parquet`` (row group by row group), ``records`` (the
records' origins and ids), ``source`` (the ``Source`` a run iterates).
"""

from .records import Items, Row, UnparsedLine, guard_parse_errors, origin_of, record_id
from .source import FORMATS, Format, SizedSource, Source, read

__all__ = ["FORMATS", "Format", "Items", "Row", "SizedSource", "Source", "UnparsedLine", "guard_parse_errors",
           "origin_of", "read", "record_id"]
