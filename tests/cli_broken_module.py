"""A module whose import fails: the CLI must say so and exit 2."""

raise RuntimeError("this module is broken on purpose")
