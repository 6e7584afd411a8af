"""How long `gapt-bench site` takes on 10,000 run records (a measurement to quote, not a timed test).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/site_10k.py [--no-curves] [--keep DIR]

The records: 3 tasks x (baseline + gapt, mbe, periodic at 4 regularisation weights each) = 39 configurations x 257
seeds = 10,023 records (tests/factories.make_record), each with a 50-row curve.jsonl as a quick-preset run writes
(unless --no-curves). Prints the time of each stage and of the whole build, the number of pages and the size.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from factories import make_record

TASKS = {
    "fineweb_lm": ("val_ce", "val_mbe", "val_mbe_centered", "val_mbe_layer_0", "val_mbe_layer_1"),
    "arithmetic_ood": ("ood_answer_ce", "ood_digit_acc", "ood_mbe", "ood_mbe_layer_0", "ood_mbe_layer_1"),
    "forgetting_separation": ("retained_l1", "finetuned_l1", "separation", "mbe"),
}
SEEDS = 257
WEIGHTS = (0.03, 0.1, 0.3, 1.0)
ENV = {
    "git_sha": "0" * 40,
    "git_dirty": False,
    "gapt_bench": "0.2.0",
    "python": "3.11.7",
    "torch": "2.13.0+cpu",
    "device": "cpu",
    "machine_class": "cpu:bench [avx2,fma]",
    "hostname": "bench",
}


def curve(rng: random.Random, method: str) -> str:
    rows = []
    for i in range(50):
        mbe = [1.2 - 0.01 * i + rng.random() * 0.05 for _ in range(2)]
        step = 25 * (i + 1)
        rows.append(
            {
                "step": step,
                "tokens": step * 2048,
                "ce": 3 / (1 + 0.05 * i) + rng.random() * 0.02,
                "loss": 3.0,
                "lr": 1e-3,
                "grad_norm": 0.5,
                "phase": 2 if method != "baseline" and i % 10 > 5 else 1,
                **{f"mbe_layer_{k}": v for k, v in enumerate(mbe)},
                "mbe": sum(mbe) / 2,
            }
        )
    return "".join(json.dumps(r) + "\n" for r in rows)


def make_results(folder: Path, curves: bool) -> int:
    rng = random.Random(0)
    arms = [("baseline", 1.0)] + [(m, w) for m in ("gapt", "mbe", "periodic") for w in WEIGHTS]
    n = 0
    with open(folder / "runs.jsonl", "w") as f:
        for task, metrics in TASKS.items():
            for method, weight in arms:
                for seed in range(SEEDS):
                    bump = 0.05 if method == "gapt" else 0.0
                    rec = make_record(
                        task,
                        method,
                        seed,
                        reg_weight=weight,
                        env=ENV,
                        metrics={m: 1 + rng.random() + bump for m in metrics},
                    )
                    f.write(json.dumps(rec) + "\n")
                    n += 1
                    if curves:
                        run = folder / "runs" / rec["run_id"]
                        run.mkdir(parents=True)
                        (run / "curve.jsonl").write_text(curve(rng, method))
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-curves", action="store_true")
    ap.add_argument("--keep", default=None, help="build the site here (default: a temporary folder)")
    args = ap.parse_args()
    from gapt_bench.results.site import build_site
    from gapt_bench.results.site.content import gather
    from gapt_bench.results.store import read_records

    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        results.mkdir()
        n = make_results(results, not args.no_curves)
        out = Path(args.keep or Path(tmp) / "site")
        t0 = time.perf_counter()
        records = read_records(results)
        t1 = time.perf_counter()
        gather(records)
        t2 = time.perf_counter()
        site = build_site(results, out)
        t3 = time.perf_counter()
        size = sum(p.stat().st_size for p in site.pages)
        print(
            f"{n} records ({'with' if not args.no_curves else 'without'} curves), {len(site.pages)} pages, "
            f"{site.n_figures} figures, {size / 1e6:.1f} MB"
        )
        print(
            f"read records {t1 - t0:.1f} s; analyses (report, paper, leaderboard) {t2 - t1:.1f} s; "
            f"whole `build_site` (reads and analyses again, figures, pages) {t3 - t2:.1f} s"
        )


if __name__ == "__main__":
    main()
