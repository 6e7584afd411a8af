"""The GAPT phase gate (Yu 2025): a pure state machine over training CE and MBE, configured by `GAPTConfig`.

Phase 1 (memorize) trains on CE only; phase 2 (compress) on CE + lambda * MBE. The canonical rules
(gapt-paper.md section 2.1, the May-2025 code and minimind's sorl.py), fed the training CE and per-layer MBE
once per optimizer step (gapt.patience_unit=step) or once per micro-batch (micro_batch, the later code); the
patience counters s_m, s_c count these updates:

- Phase 1: dE = E_min - E, E_min <- min(E_min, E). dE > delta_E resets s_m, else s_m += 1.
  When s_m >= p_m: go to phase 2 with s_c = 0, M_min = +inf, and (spike_reference="phase") E_min = +inf.
- Phase 2: update E_min. If E > (1 + tau) * E_min: CE spike, back to phase 1 (s_m = 0).
  Otherwise dM = max_l (M_min_l - M_l) (an improvement on any layer counts), update M_min;
  dM > delta_M resets s_c, else s_c += 1. When s_c >= p_c: MBE plateau, back to phase 1 (s_m = 0).
  Leaving phase 2 resets M_min.

Variants, each a named option of `GAPTConfig` (config.py documents each):
- thresholds "relative": gains divided by |min| (the later code);
- spike_reference "global": E_min never reset;
- smoothing: an EMA on the gate inputs (0 = the paper's raw last value);
- mbe_min_reset false: M_min is never reset and is updated in phase 1 too (the later code);
- first_gain "zero": the first observation of a quantity scores gain 0 instead of always counting (the later code);
- mbe_aggregate "mean": one aggregated MBE (the mean over the watched layers) instead of the best gain over layers.
Which layers the gate watches (gapt.watch) and the phase-2 loss are the method's business (methods/gapt.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gapt_bench.config import GAPTConfig

MEMORIZE, COMPRESS = 1, 2
INF = math.inf


@dataclass
class GateStats:
    """Counts of the gate's updates (record keys gate_*). steps_memorize/steps_compress count updates made in each
    phase: optimizer steps, or micro-batches under patience_unit=micro_batch. (The realised schedule, counted in
    micro-batches whatever the unit, is `phase_summary`'s micro_batches_*.)"""

    switches: int = 0
    entries_to_compress: int = 0
    exits_by_spike: int = 0
    exits_by_plateau: int = 0
    steps_memorize: int = 0
    steps_compress: int = 0


class GAPTController:
    """The gate's state machine. `update` takes one observation and returns the phase for the next step."""

    def __init__(self, cfg: GAPTConfig, lam: float = 1.0) -> None:
        self.cfg, self.lam = cfg, lam
        self.phase = cfg.initial_phase
        self.s_m = self.s_c = 0
        self.e_min = INF
        self.m_min: list[float] = []
        self.ema_e: float | None = None
        self.ema_m: list[float] | None = None
        self.stats = GateStats()
        self.last_event = ""

    # -- the rules ---------------------------------------------------------------------------------------------
    def _gain(self, best: float, value: float) -> float:
        if best == INF:  # the first observation: always an improvement (May-2025) or gain 0 (later code)
            return INF if self.cfg.first_gain == "improvement" else 0.0
        gain = best - value
        return gain / abs(best) if self.cfg.thresholds == "relative" and best != 0 else gain

    def _smooth(self, ce: float, mbe: Sequence[float]) -> tuple[float, list[float]]:
        b = self.cfg.smoothing
        if b == 0.0:
            return ce, list(mbe)
        self.ema_e = ce if self.ema_e is None else b * self.ema_e + (1 - b) * ce
        if self.ema_m is None or len(self.ema_m) != len(mbe):
            self.ema_m = list(mbe)
        else:
            self.ema_m = [b * a + (1 - b) * m for a, m in zip(self.ema_m, mbe)]
        return self.ema_e, list(self.ema_m)

    def _mbe_gain(self, mbe: list[float]) -> float:
        """The best improvement over the watched values (one value when aggregated), updating M_min."""
        if len(self.m_min) != len(mbe):
            self.m_min = [INF] * len(mbe)
        gain = max((self._gain(b, m) for b, m in zip(self.m_min, mbe)), default=INF)
        self.m_min = [min(b, m) for b, m in zip(self.m_min, mbe)]
        return gain

    def update(self, ce: float, mbe: Sequence[float]) -> int:
        """Feed one step's training CE and per-layer MBE (the watched layers); returns the next step's phase."""
        ce, mbe = self._smooth(float(ce), [float(m) for m in mbe])
        if self.cfg.mbe_aggregate == "mean" and mbe:
            mbe = [sum(mbe) / len(mbe)]
        self.last_event = ""
        if self.phase == MEMORIZE:
            self.stats.steps_memorize += 1
            gain = self._gain(self.e_min, ce)
            self.e_min = min(self.e_min, ce)
            self.s_m = 0 if gain > self.cfg.delta_e else self.s_m + 1
            if not self.cfg.mbe_min_reset and mbe:
                self._mbe_gain(mbe)  # the later code tracks the MBE minimum in phase 1 too
            if self.s_m >= self.cfg.patience_m:
                self._enter_compress()
        else:
            self.stats.steps_compress += 1
            self.e_min = min(self.e_min, ce)
            if ce > (1.0 + self.cfg.tau) * self.e_min:
                self._enter_memorize("spike")
                return self.phase
            gain = self._mbe_gain(mbe)
            self.s_c = 0 if gain > self.cfg.delta_m else self.s_c + 1
            if self.s_c >= self.cfg.patience_c:
                self._enter_memorize("plateau")
        return self.phase

    def _enter_compress(self) -> None:
        self.phase, self.s_c = COMPRESS, 0
        if self.cfg.mbe_min_reset:
            self.m_min = []
        if self.cfg.spike_reference == "phase":
            self.e_min = INF
        self.stats.switches += 1
        self.stats.entries_to_compress += 1
        self.last_event = "compress"

    def _enter_memorize(self, why: str) -> None:
        self.phase, self.s_m = MEMORIZE, 0
        if self.cfg.mbe_min_reset:
            self.m_min = []
        self.stats.switches += 1
        if why == "spike":
            self.stats.exits_by_spike += 1
        else:
            self.stats.exits_by_plateau += 1
        self.last_event = f"memorize:{why}"

    # -- what the trainer reads ------------------------------------------------------------------------------------
    def loss_weights(self) -> tuple[float, float]:
        """(weight on CE, weight on MBE) for the current phase."""
        return (1.0, self.lam) if self.phase == COMPRESS else (1.0, 0.0)

    def summary(self) -> dict[str, int]:
        return asdict(self.stats)

    _STATE = ("phase", "s_m", "s_c", "e_min", "m_min", "ema_e", "ema_m", "last_event")

    def state_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self._STATE}
        d["stats"] = asdict(self.stats)
        return d

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            if k == "stats":
                self.stats = GateStats(**v)
            elif k in self._STATE:
                setattr(self, k, v)


def phase_summary(phases: list[int]) -> dict[str, float | int | None]:
    """The realised schedule of a run, fed one phase per micro-batch: its duty cycle and mean phase lengths, all in
    micro-batches (optimizer steps when there is no gradient accumulation).

    micro_batches_* = micro-batches in that phase; duty_compress = compression micro-batches / micro-batches;
    mean_phase_* = mean length of the maximal runs of that phase. Records written before the rename call
    micro_batches_* steps_* (the gate's own update counts are gate_steps_*: `GateStats`).
    """
    runs: dict[int, list[int]] = {MEMORIZE: [], COMPRESS: []}
    for i, p in enumerate(phases):
        if i and phases[i - 1] == p:
            runs[p][-1] += 1
        else:
            runs[p].append(1)
    n = len(phases)
    mean = {p: (sum(r) / len(r) if r else None) for p, r in runs.items()}
    return {
        "micro_batches_memorize": sum(runs[MEMORIZE]),
        "micro_batches_compress": sum(runs[COMPRESS]),
        "duty_compress": sum(runs[COMPRESS]) / n if n else None,
        "mean_phase_memorize": mean[MEMORIZE],
        "mean_phase_compress": mean[COMPRESS],
        "n_phases_compress": len(runs[COMPRESS]),
        "first_phase": phases[0] if phases else None,
    }
