"""The gate as a pure state machine, driven through each rule by constructed CE/MBE traces."""
import pytest

from gapt_bench.gapt import COMPRESS, MEMORIZE, GAPTController


def gate(**kw):
    defaults = dict(delta_e=0.01, delta_m=0.002, patience_m=5, patience_c=5, tau=0.1)
    defaults.update(kw)
    return GAPTController(**defaults)


def test_ce_plateau_switches_to_compression_after_patience():
    g = gate()
    for ce in (3.0, 2.5, 2.0):
        assert g.update(ce, [1.0]) == MEMORIZE
    phases = [g.update(2.0 - 0.001 * i, [1.0]) for i in range(5)]  # improvements below delta_e
    assert phases == [MEMORIZE] * 4 + [COMPRESS]
    assert g.loss_weights() == (1.0, 1.0)
    assert g.stats.entries_to_compress == 1


def test_ce_spike_returns_to_memorization():
    g = gate(initial_phase=COMPRESS)
    g.update(2.0, [1.0])
    assert g.update(2.1, [0.9]) == COMPRESS  # within (1 + tau)
    assert g.update(2.3, [0.8]) == MEMORIZE  # 2.3 > 1.1 * 2.0
    assert g.stats.exits_by_spike == 1 and g.last_event == "memorize:spike"


def test_mbe_plateau_returns_to_memorization():
    g = gate(initial_phase=COMPRESS)
    g.update(2.0, [1.0, 1.0])
    # any layer improving by more than delta_m resets the patience
    for i in range(4):
        assert g.update(2.0, [1.0, 1.0 - 0.01 * (i + 1)]) == COMPRESS
    phases = [g.update(2.0, [1.0, 0.96]) for _ in range(5)]
    assert phases == [COMPRESS] * 4 + [MEMORIZE]
    assert g.stats.exits_by_plateau == 1


def test_full_cycle_and_phase_local_spike_reference():
    g = gate()
    g.update(1.0, [1.0])
    for _ in range(5):
        g.update(1.0, [1.0])
    assert g.phase == COMPRESS and g.e_min == float("inf")  # E_min is reset on entering compression
    g.update(1.5, [0.9])  # the phase-local minimum is now 1.5: no spike although 1.5 > 1.1 * 1.0
    assert g.phase == COMPRESS
    g2 = gate(spike_reference="global")
    for _ in range(6):
        g2.update(1.0, [1.0])
    assert g2.phase == COMPRESS
    assert g2.update(1.5, [0.9]) == MEMORIZE  # against the global minimum 1.0 it is a spike


def test_relative_thresholds():
    g = gate(thresholds="relative", delta_e=0.01)
    g.update(100.0, [1.0])
    g.update(99.5, [1.0])  # absolute gain 0.5 > 0.01, relative gain 0.005 < 0.01: no reset
    assert g.s_m == 1


def test_smoothing_delays_the_spike():
    raw, smooth = gate(initial_phase=COMPRESS), gate(initial_phase=COMPRESS, smoothing=0.9)
    for g in (raw, smooth):
        g.update(2.0, [1.0])
    assert raw.update(2.5, [1.0]) == MEMORIZE
    assert smooth.update(2.5, [1.0]) == COMPRESS  # EMA 2.05 is within tolerance


def test_state_round_trip_and_bad_options():
    g = gate()
    for ce in (3.0, 2.0, 2.0, 2.0):
        g.update(ce, [1.0])
    h = gate()
    h.load_state_dict(g.state_dict())
    assert h.state_dict() == g.state_dict()
    assert [g.update(2.0, [1.0]) for _ in range(3)] == [h.update(2.0, [1.0]) for _ in range(3)]
    with pytest.raises(ValueError):
        gate(thresholds="percent")
