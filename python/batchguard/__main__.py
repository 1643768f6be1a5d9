"""``python -m batchguard``: the same command as ``batchguard``."""

from .cli import main

main(prog_name="batchguard")
