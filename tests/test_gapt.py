"""The gate as a pure state machine, driven through each rule by constructed CE/MBE traces."""

import pytest
import torch

from gapt_bench.config import GAPTConfig, from_dict
from gapt_bench.methods.phase_gate import (
    COMPRESS,
    MEMORIZE,
    GAPTController,
    phase_summary,
)


def gate(**kw):
    defaults = dict(delta_e=0.01, delta_m=0.002, patience_m=5, patience_c=5, tau=0.1)
    defaults.update(kw)
    return GAPTController(from_dict(GAPTConfig, defaults, "gapt"))


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


# ----------------------------------------------------------------------------------------------------------------
# The author's code variants, each a named option


def test_later_gate_keeps_the_mbe_minimum_across_phases():
    """mbe_min_reset=false: M_min is tracked in phase 1 too and never reset, so a compression phase that does not
    beat the best MBE seen so far makes no progress (the May-2025 gate starts each phase from +inf)."""
    may, later = gate(), gate(mbe_min_reset=False)
    for g in (may, later):
        for _ in range(6):
            g.update(1.0, [0.5])  # CE flat: compression after patience; MBE 0.5 seen in phase 1
        assert g.phase == COMPRESS
    assert may.update(1.0, [0.8]) == COMPRESS and may.s_c == 0  # first observation of the phase: an improvement
    assert later.update(1.0, [0.8]) == COMPRESS and later.s_c == 1  # 0.8 does not beat 0.5


def test_first_gain_zero_counts_the_first_observation_as_no_improvement():
    may, later = gate(), gate(first_gain="zero")
    may.update(3.0, [1.0])
    later.update(3.0, [1.0])
    assert may.s_m == 0 and later.s_m == 1


def test_mean_aggregate_uses_the_gain_of_the_mean_not_the_best_layer():
    best, mean = gate(initial_phase=COMPRESS), gate(initial_phase=COMPRESS, mbe_aggregate="mean")
    for g in (best, mean):
        g.update(2.0, [1.0, 1.0])
        g.update(2.0, [0.99, 1.009])  # layer 0 improves by 0.01 > delta_m; the mean improves by 0.0005 only
    assert best.s_c == 0 and mean.s_c == 1


def _method(name, **sections):
    from gapt_bench.launch.plan import make_plan
    from gapt_bench.methods import METHODS

    overrides = [f"{k}={v}" for k, v in sections.items()]
    cfg = make_plan(["fineweb_lm"], [name], [0], "tiny", overrides)[0]
    return METHODS.get(name)(cfg, 12)


def _mean(mbe: dict) -> float:
    """The regulariser's value: the mean MBE over the layers it covered (StepInfo.mbe)."""
    return sum(mbe.values()) / len(mbe)


def test_gate_watch_all_and_rotate_rr_layers():
    m = _method("gapt", **{"reg.layers": "rotate_rr"})
    assert m.reg_layers_all() == list(range(2, 10))  # RRScheduler(start_layer=2, end_layer=L-2) on 12 layers
    assert [m.reg_layers(s)[0] for s in range(9)] == [2, 3, 4, 5, 6, 7, 8, 9, 2]
    assert m.gate_layers() == list(range(2, 10))
    assert _method("gapt", **{"gapt.watch": "all"}).gate_layers() == list(range(12))
    assert _method("gapt", **{"reg.layers": "middle"}).reg_layers(0) == list(range(1, 11))


def test_alternate_step_mode_alternates_ce_and_mbe_steps():
    m = _method("mbe", **{"reg.step_mode": "alternate", "reg.layers": "all", "reg.weight": 2.0})
    ce = torch.tensor(3.0, requires_grad=True)
    hidden = [torch.randn(2, 16, 8, requires_grad=True) for _ in range(12)]
    even, _info = m.loss(ce, hidden, step=4)
    odd, info_odd = m.loss(ce, hidden, step=5)
    assert even is ce  # a CE-only step
    assert float(odd.detach()) == pytest.approx(2.0 * _mean(info_odd.mbe))  # an MBE-only step
    summed = _method("mbe", **{"reg.layers": "all", "reg.weight": 2.0})
    total, info_sum = summed.loss(ce, hidden, step=5)
    assert float(total.detach()) == pytest.approx(3.0 + 2.0 * _mean(info_sum.mbe))


def test_phase_summary_of_a_schedule():
    phases = [1] * 6 + [2] * 2 + [1] * 2 + [2] * 2
    s = phase_summary(phases)
    assert s["duty_compress"] == pytest.approx(4 / 12)
    assert s["mean_phase_memorize"] == 4 and s["mean_phase_compress"] == 2 and s["n_phases_compress"] == 2
    assert s["first_phase"] == 1
    # counted in micro-batches, and named so: the gate's gate_steps_* count its updates (optimizer steps by default)
    assert (s["micro_batches_memorize"], s["micro_batches_compress"]) == (8, 4) and "steps_compress" not in s
    assert phase_summary([])["duty_compress"] is None


# ----------------------------------------------------------------------------------------------------------------
# periodic, matched to the gate's realised schedule


def test_periodic_copies_the_duty_cycle_of_the_gapt_run_it_controls(tmp_path, capsys):
    from gapt_bench import cli
    from gapt_bench.results.store import read_records

    fast = [
        "data.steps_first=200",
        "data.steps_second=200",
        "gapt.patience_m=10",
        "gapt.patience_c=10",
        "data.batch_layout=grouped",
    ]
    argv = [
        "run",
        "--tasks",
        "forgetting_separation",
        "--methods",
        "periodic,gapt",
        "--seeds",
        "0",
        "--workers",
        "1",
        "--no-report",
        "--out",
        str(tmp_path),
        *[x for o in fast for x in ("--set", o)],
    ]
    assert cli.main(argv) == 0
    recs = read_records(tmp_path)
    for seed in (0,):
        (g,) = [
            r
            for r in recs
            if r["method"] == "gapt" and r["seed"] == seed and r["config"]["data"]["batch_layout"] == "grouped"
        ]
        (p,) = [
            r
            for r in recs
            if r["method"] == "periodic" and r["seed"] == seed and r["config"]["data"]["batch_layout"] == "grouped"
        ]
        assert p["summary"]["matched_to"] == g["run_id"]  # planned second although listed first
        assert 0 < g["summary"]["duty_compress"] < 1
        assert p["summary"]["matched_duty_compress"] == g["summary"]["duty_compress"]
        assert abs(p["summary"]["duty_compress"] - g["summary"]["duty_compress"]) <= 0.05
        assert p["summary"]["schedule_p_c"] == max(1, round(g["summary"]["mean_phase_compress"]))


def test_a_matched_control_without_its_reference_is_refused_at_planning(tmp_path, capsys):
    from gapt_bench import cli

    out = tmp_path / "out"
    assert (
        cli.main(
            ["run", "--tasks", "forgetting_separation", "--methods", "periodic", "--seeds", "0", "--out", str(out)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "add gapt to --methods or set periodic.match=none" in err and err.count("\n") == 1
    assert not out.exists()
    assert (
        cli.main(
            [
                "run",
                "--tasks",
                "forgetting_separation",
                "--methods",
                "periodic",
                "--seeds",
                "0",
                "--out",
                str(out),
                "--set",
                "periodic.match=none",
                "--set",
                "data.steps_first=20",
                "--set",
                "data.steps_second=20",
                "--no-report",
            ]
        )
        == 0
    )


def test_micro_batch_patience_switches_within_a_step():
    """patience_unit=micro_batch (the later code): the gate steps on every micro-batch, and a switch made after one
    micro-batch already shapes the next micro-batch's loss, inside the same optimizer step."""
    m = _method(
        "gapt", **{"gapt.patience_unit": "micro_batch", "gapt.patience_m": 2, "gapt.delta_e": 10.0, "reg.layers": "all"}
    )
    hidden = [torch.randn(2, 16, 8) for _ in range(12)]
    phases = []
    for _ in range(4):  # four micro-batches of one optimizer step (step 0)
        _, info = m.loss(torch.tensor(3.0), hidden, step=0)
        phases.append(info.phase)
        m.observe_micro(info, 0)
    m.observe([], 0)
    # the first CE counts as an improvement; then no gain reaches 10: after p_m = 2 more the gate compresses
    assert phases == [1, 1, 1, 2]
    assert m.summary()["duty_compress"] == 0.25 and m.summary()["mean_phase_compress"] == 1
    per_step = _method("gapt", **{"gapt.patience_m": 2, "gapt.delta_e": 10.0, "reg.layers": "all"})
    for _ in range(4):
        _, info = per_step.loss(torch.tensor(3.0), hidden, step=0)
        per_step.observe_micro(info, 0)
        assert info.phase == 1  # patience counted in optimizer steps: no switch inside a step
