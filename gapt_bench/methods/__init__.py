"""Training methods: how a batch's loss is composed from CE and hidden states (`base.Method`), the built-in
methods (baseline, gapt, mbe, periodic: one module each) and the GAPT phase gate (`phase_gate`)."""

from gapt_bench.methods.base import METHODS, Method, StepInfo, register_method

__all__ = ["METHODS", "Method", "StepInfo", "register_method"]
