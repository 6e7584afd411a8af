"""The same two phases on a fixed schedule (p_m steps CE, p_c steps CE + lambda*MBE), with no gate.

The control for GAPT: on small tasks the gate can settle into a fixed cycle; if `periodic` matches `gapt`, the
gate's decisions do not matter, only the duty cycle does.
"""
from __future__ import annotations

from gapt_bench.gapt import COMPRESS, MEMORIZE
from gapt_bench.methods.base import Method


class Periodic(Method):
    name = "periodic"
    description = "fixed schedule: p_m steps CE, then p_c steps CE+lambda*MBE (control for the gate)"

    def __init__(self, cfg, n_layer):
        super().__init__(cfg, n_layer)
        self.steps = {MEMORIZE: 0, COMPRESS: 0}

    def _phase_at(self, step: int) -> int:
        g = self.cfg.gapt
        first, second = (g.patience_m, g.patience_c) if g.initial_phase == MEMORIZE else (g.patience_c, g.patience_m)
        in_first = step % (first + second) < first
        other = COMPRESS if g.initial_phase == MEMORIZE else MEMORIZE
        return g.initial_phase if in_first else other

    def loss(self, ce, hidden, step):
        phase = self._phase_at(step)
        weight = self.cfg.reg.weight if phase == COMPRESS else 0.0
        loss, info = self.regularised_loss(ce, hidden, step, weight)
        info.phase = phase
        return loss, info

    def observe(self, infos, step):
        self.steps[infos[-1].phase] += 1

    def phase(self):
        return None

    def summary(self):
        return {"steps_memorize": self.steps[MEMORIZE], "steps_compress": self.steps[COMPRESS]}

    def state_dict(self):
        return {"steps": dict(self.steps)}

    def load_state_dict(self, state):
        self.steps = {int(k): v for k, v in state["steps"].items()}
