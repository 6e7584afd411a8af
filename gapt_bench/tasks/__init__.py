"""Benchmark tasks: each module is one registered Task (data + evaluation). See base.Task."""
