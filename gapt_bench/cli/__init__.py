"""The command line, `gapt-bench VERB`: argument parsing, printing and exit codes (`main`), one module per group of
verbs (`run`, `plans`, `results`, `doctor`)."""

from gapt_bench.cli.main import main

__all__ = ["main"]
