"""Cross-entropy only: the reference arm."""

from __future__ import annotations

from gapt_bench.methods.base import Method, StepInfo, register_method


@register_method("baseline")
class Baseline(Method):
    description = "cross-entropy only (the reference arm)"
    batchable = True

    def loss(self, ce, hidden, step):
        return ce, StepInfo(ce=float(ce.detach()))
