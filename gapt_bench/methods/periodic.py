"""The gate's two phases on a fixed schedule, with no gate: the control for GAPT's decisions.

Matched (periodic.match=gapt, the default): the schedule copies the realised schedule of the gapt run of the same
task, setup and seed: p_c = its mean compression phase length and p_m = p_c * (1 - duty) / duty, so that the duty
cycle (the fraction of micro-batches compressing) and the number of compression phases match, starting in the
phase gapt started in. Lengths are in micro-batches, as gapt's realised schedule is counted (one per optimizer
step when there is no gradient accumulation). (Copying both mean phase lengths would not keep the duty cycle: gapt's first memorization phase is
usually long.) If periodic matches gapt, the gate's *decisions* do not matter, only how much it compressed. Unmatched (none): p_m = gapt.patience_m, p_c = gapt.patience_c micro-batches
(50% duty when they are equal). The record's summary has both arms' realised numbers (`duty_compress`, mean phase lengths;
`matched_to`, `matched_duty_compress`).
"""

from __future__ import annotations

from gapt_bench.methods.base import Method, register_method
from gapt_bench.methods.phase_gate import COMPRESS, MEMORIZE, phase_summary


@register_method("periodic")
class Periodic(Method):
    description = "fixed schedule of CE and CE+lambda*MBE steps; matched to gapt's realised duty cycle (control)"
    batchable = True
    config_sections = ("reg", "gapt", "periodic")

    def __init__(self, cfg, n_layer, matched=None):
        super().__init__(cfg, n_layer, matched)
        g = cfg.gapt
        self.first_phase, self.p_m, self.p_c = g.initial_phase, g.patience_m, g.patience_c
        if matched is not None:
            s = matched["summary"]
            self.first_phase = s.get("first_phase") or g.initial_phase
            duty = s.get("duty_compress") or 0.0
            # a run that never compressed (or never memorized) keeps that phase throughout
            self.p_c = max(1, round(s["mean_phase_compress"])) if duty > 0 and s.get("mean_phase_compress") else 0
            self.p_m = round(self.p_c * (1 - duty) / duty) if duty > 0 else 1
        self.phases: list[int] = []
        self.n_micro = 0  # micro-batches done: the schedule's clock

    @classmethod
    def matches(cls, cfg):
        return "gapt" if cfg.periodic.match == "gapt" else None

    def _phase_at(self, step: int) -> int:
        lengths = {MEMORIZE: self.p_m, COMPRESS: self.p_c}
        first = self.first_phase
        other = COMPRESS if first == MEMORIZE else MEMORIZE
        if lengths[other] == 0:
            return first
        if lengths[first] == 0:
            return other
        return first if step % (lengths[first] + lengths[other]) < lengths[first] else other

    def loss(self, ce, hidden, step):
        phase = self._phase_at(self.n_micro)
        weight = self.cfg.reg.weight if phase == COMPRESS else 0.0
        loss, info = self.regularised_loss(ce, hidden, step, weight)
        info.phase = phase
        return loss, info

    def observe_micro(self, info, step):
        self.phases.append(info.phase)
        self.n_micro += 1

    def summary(self):
        out = {"schedule_p_m": self.p_m, "schedule_p_c": self.p_c, **phase_summary(self.phases)}
        if self.matched is not None:
            out.update(
                {
                    "matched_to": self.matched["run_id"],
                    "matched_duty_compress": self.matched["summary"].get("duty_compress"),
                }
            )
        return out

    def state_dict(self):
        return {"phases": list(self.phases), "n_micro": self.n_micro}

    def load_state_dict(self, state):
        self.phases = list(state.get("phases", []))
        self.n_micro = int(state.get("n_micro", len(self.phases)))
