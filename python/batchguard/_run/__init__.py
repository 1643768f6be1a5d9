"""The run core: the plan, the engines' entry points and the engine config.

``run_batches``, ``arun_batches``, jobs and replay all call into these modules; none of them
imports the public API back. This ``__init__`` imports none of its submodules, so importing one
(``batchguard._run.config`` from the reference engine, say) never pulls in the rest.
"""
