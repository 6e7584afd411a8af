"""Data files that ship with gapt_bench (the offline corpus and its card)."""
