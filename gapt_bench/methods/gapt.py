"""GAPT: gated phase transitions between memorization (CE) and compression (CE + lambda * MBE).

The gate itself is `gapt_bench.methods.phase_gate.GAPTController`; this class wires it to the trainer. The gate reads the
*training* CE and MBE of the last micro-batch of each optimizer step (patience_unit="step", the May-2025 code),
or of every micro-batch as soon as it is done, so that a switch reaches the next micro-batch of the same step
(patience_unit="micro_batch", the later code), on the layers `gapt.watch` names. It never reads validation or test
data. The realised schedule (`duty_compress`, mean phase lengths) is counted in micro-batches.
"""

from __future__ import annotations

from gapt_bench.methods.base import Method, register_method
from gapt_bench.methods.phase_gate import GAPTController, phase_summary


@register_method("gapt")
class GAPT(Method):
    description = "gated phase transition: CE until CE plateaus, then CE+lambda*MBE until a CE spike or MBE plateau"
    batchable = True
    config_sections = ("reg", "gapt")
    controls = ("periodic", "mbe")

    def __init__(self, cfg, n_layer, matched=None):
        super().__init__(cfg, n_layer, matched)
        self.gate = GAPTController(cfg.gapt, lam=cfg.reg.weight)
        self.per_micro = cfg.gapt.patience_unit == "micro_batch"
        self.syncs_micro_batches = self.per_micro
        self.phases: list[int] = []  # the phase of every micro-batch: the realised schedule

    def loss(self, ce, hidden, step):
        _, weight = self.gate.loss_weights()
        loss, info = self.regularised_loss(ce, hidden, step, weight, watch=self.gate_layers())
        info.phase = self.gate.phase
        return loss, info

    def observe_micro(self, info, step):
        self.phases.append(info.phase)
        if self.per_micro:
            self.gate.update(info.ce, [info.mbe[i] for i in self.gate_layers()])

    def observe(self, infos, step):
        if not self.per_micro:
            info = infos[-1]
            self.gate.update(info.ce, [info.mbe[i] for i in self.gate_layers()])

    def summary(self):
        return {**{f"gate_{k}": v for k, v in self.gate.summary().items()}, **phase_summary(self.phases)}

    def state_dict(self):
        return {**self.gate.state_dict(), "phases": list(self.phases)}

    def load_state_dict(self, state):
        self.phases = list(state.get("phases", []))
        self.gate.load_state_dict(state)
