"""CE + lambda * MBE at every step: the IBLM Lagrangian, the fixed-weight control for GAPT."""

from __future__ import annotations

from gapt_bench.methods.base import Method, register_method


@register_method("mbe")
class FixedMBE(Method):
    description = "CE + lambda*MBE always on (fixed-weight IBLM control)"
    batchable = True
    config_sections = ("reg",)

    def loss(self, ce, hidden, step):
        loss, info = self.regularised_loss(ce, hidden, step, self.cfg.reg.weight)
        info.phase = 2
        return loss, info
