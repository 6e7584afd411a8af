"""The GAPT phase gate (Yu 2025): a pure state machine, no torch.

Phase 1 (memorize) trains on CE only; phase 2 (compress) on CE + lambda * MBE. The canonical rules
(gapt-paper.md section 2.1, May-2025 code and minimind's sorl.py), fed the training CE and per-layer MBE
once per optimizer step:

- Phase 1: dE = E_min - E, E_min <- min(E_min, E). dE > delta_E resets s_m, else s_m += 1.
  When s_m >= p_m: go to phase 2 with s_c = 0, M_min = +inf, and (spike_reference="phase") E_min = +inf.
- Phase 2: update E_min. If E > (1 + tau) * E_min: CE spike, back to phase 1 (s_m = 0).
  Otherwise dM = max_l (M_min_l - M_l) (an improvement on any layer counts), update M_min;
  dM > delta_M resets s_c, else s_c += 1. When s_c >= p_c: MBE plateau, back to phase 1 (s_m = 0).
  Leaving phase 2 resets M_min.

Variants, each a named option: thresholds "relative" (gains divided by |min|, the later code), spike_reference
"global" (E_min never reset), an EMA on the gate inputs (`smoothing`, 0 = the paper's raw last value).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

MEMORIZE, COMPRESS = 1, 2
INF = math.inf


@dataclass
class GateStats:
    switches: int = 0
    entries_to_compress: int = 0
    exits_by_spike: int = 0
    exits_by_plateau: int = 0
    steps_memorize: int = 0
    steps_compress: int = 0


@dataclass
class GAPTController:
    delta_e: float = 0.01
    delta_m: float = 0.002
    patience_m: int = 125
    patience_c: int = 125
    tau: float = 0.1
    lam: float = 1.0
    thresholds: str = "absolute"
    spike_reference: str = "phase"
    smoothing: float = 0.0
    initial_phase: int = MEMORIZE

    phase: int = field(init=False)
    s_m: int = field(init=False, default=0)
    s_c: int = field(init=False, default=0)
    e_min: float = field(init=False, default=INF)
    m_min: list[float] = field(init=False, default_factory=list)
    ema_e: float | None = field(init=False, default=None)
    ema_m: list[float] | None = field(init=False, default=None)
    stats: GateStats = field(init=False, default_factory=GateStats)
    last_event: str = field(init=False, default="")

    def __post_init__(self) -> None:
        if self.thresholds not in ("absolute", "relative"):
            raise ValueError(f"thresholds must be 'absolute' or 'relative', not {self.thresholds!r}")
        if self.spike_reference not in ("phase", "global"):
            raise ValueError(f"spike_reference must be 'phase' or 'global', not {self.spike_reference!r}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), not {self.smoothing}")
        self.phase = self.initial_phase

    # -- the rules ---------------------------------------------------------------------------------------------
    def _gain(self, best: float, value: float) -> float:
        if best == INF:
            return INF  # the first observation always counts as an improvement
        gain = best - value
        return gain / abs(best) if self.thresholds == "relative" and best != 0 else gain

    def _smooth(self, ce: float, mbe: Sequence[float]) -> tuple[float, list[float]]:
        if self.smoothing == 0.0:
            return ce, list(mbe)
        b = self.smoothing
        self.ema_e = ce if self.ema_e is None else b * self.ema_e + (1 - b) * ce
        if self.ema_m is None or len(self.ema_m) != len(mbe):
            self.ema_m = list(mbe)
        else:
            self.ema_m = [b * a + (1 - b) * m for a, m in zip(self.ema_m, mbe)]
        return self.ema_e, list(self.ema_m)

    def update(self, ce: float, mbe: Sequence[float]) -> int:
        """Feed one step's training CE and per-layer MBE; returns the phase for the next step."""
        ce, mbe = self._smooth(float(ce), [float(m) for m in mbe])
        self.last_event = ""
        if self.phase == MEMORIZE:
            self.stats.steps_memorize += 1
            gain = self._gain(self.e_min, ce)
            self.e_min = min(self.e_min, ce)
            self.s_m = 0 if gain > self.delta_e else self.s_m + 1
            if self.s_m >= self.patience_m:
                self._enter_compress()
        else:
            self.stats.steps_compress += 1
            self.e_min = min(self.e_min, ce)
            if ce > (1.0 + self.tau) * self.e_min:
                self._enter_memorize("spike")
                return self.phase
            if len(self.m_min) != len(mbe):
                self.m_min = [INF] * len(mbe)
            gain = max((self._gain(b, m) for b, m in zip(self.m_min, mbe)), default=INF)
            self.m_min = [min(b, m) for b, m in zip(self.m_min, mbe)]
            self.s_c = 0 if gain > self.delta_m else self.s_c + 1
            if self.s_c >= self.patience_c:
                self._enter_memorize("plateau")
        return self.phase

    def _enter_compress(self) -> None:
        self.phase, self.s_c = COMPRESS, 0
        self.m_min = []
        if self.spike_reference == "phase":
            self.e_min = INF
        self.stats.switches += 1
        self.stats.entries_to_compress += 1
        self.last_event = "compress"

    def _enter_memorize(self, why: str) -> None:
        self.phase, self.s_m = MEMORIZE, 0
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

    def state_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("phase", "s_m", "s_c", "e_min", "m_min", "ema_e", "ema_m", "last_event")}
        d["stats"] = asdict(self.stats)
        return d

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            if k == "stats":
                self.stats = GateStats(**v)
            else:
                setattr(self, k, v)
