"""The final report of a run, built once and rendered three ways.

``model.build(report)`` turns a :class:`~batchguard.results.BatchReport` into a
:class:`~batchguard._report.model.ReportModel`: the counts and rates, the status headline, the
failure patterns by error type, a sample of failed records and the next steps. ``text`` renders
it as ``report.summary()`` prints it, ``panel`` as the ``batchguard`` command shows it on a
terminal (rich), and ``ReportModel.to_json()`` as JSON-safe data. Every rendering reads the same
model, so the library and the command line cannot disagree about a run.
"""
