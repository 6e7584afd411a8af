"""GAPT: gated phase transitions between memorization (CE) and compression (CE + lambda * MBE).

The gate itself is `gapt_bench.gapt.GAPTController`; this class wires it to the trainer. The gate reads the
*training* CE and MBE of the last micro-batch of each optimizer step (patience_unit="step", the May-2025 code),
or of every micro-batch (patience_unit="micro_batch", the later code). It never reads validation or test data.
"""
from __future__ import annotations

from gapt_bench.gapt import COMPRESS, GAPTController
from gapt_bench.methods.base import Method


def controller_from_config(cfg) -> GAPTController:
    g = cfg.gapt
    return GAPTController(
        delta_e=g.delta_e, delta_m=g.delta_m, patience_m=g.patience_m, patience_c=g.patience_c, tau=g.tau,
        lam=cfg.reg.weight, thresholds=g.thresholds, spike_reference=g.spike_reference, smoothing=g.smoothing,
        initial_phase=g.initial_phase,
    )


class GAPT(Method):
    name = "gapt"
    description = "gated phase transition: CE until CE plateaus, then CE+lambda*MBE until a CE spike or MBE plateau"

    def __init__(self, cfg, n_layer):
        super().__init__(cfg, n_layer)
        self.gate = controller_from_config(cfg)

    def loss(self, ce, hidden, step):
        _, weight = self.gate.loss_weights()
        loss, info = self.regularised_loss(ce, hidden, step, weight, watch=self.gate_layers())
        info.phase = self.gate.phase
        return loss, info

    def observe(self, infos, step):
        fed = infos if self.cfg.gapt.patience_unit == "micro_batch" else infos[-1:]
        layers = self.gate_layers()
        for info in fed:
            self.gate.update(info.ce, [info.mbe[i] for i in layers])

    def phase(self):
        return self.gate.phase

    def summary(self):
        return {f"gate_{k}": v for k, v in self.gate.summary().items()}

    def state_dict(self):
        return self.gate.state_dict()

    def load_state_dict(self, state):
        self.gate.load_state_dict(state)


__all__ = ["GAPT", "COMPRESS", "controller_from_config"]
