"""Training methods: how a batch's loss is composed from CE and hidden states. See base.Method."""
from gapt_bench.methods.base import Method, StepInfo

__all__ = ["Method", "StepInfo"]
