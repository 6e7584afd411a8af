"""`gapt-bench ls`, `validate` and `status`: the plan of a request, before and while it runs."""

from __future__ import annotations

import json
from pathlib import Path

from gapt_bench.cli.common import plan_from
from gapt_bench.config import ConfigError
from gapt_bench.launch.plugins import plugin_errors
from gapt_bench.methods import METHODS
from gapt_bench.tasks import TASKS


def cmd_ls(args) -> int:
    if args.what in ("all", "tasks", "presets"):
        print("tasks:")
        for name in TASKS.names():
            cls = TASKS.get(name)
            try:
                presets = ", ".join(cls.load_presets()) if args.what != "tasks" else ""
            except ConfigError as e:  # a plug-in with broken presets must not hide the others
                presets = f"cannot load presets: {e}"
            print(f"  {name:<24} v{cls.version}  {cls.description}" + (f"  [presets: {presets}]" if presets else ""))
            print(f"  {'':<24} from {TASKS.origin(name)}")
    if args.what in ("all", "methods"):
        print("methods:")
        for name in METHODS.names():
            cls = METHODS.get(name)
            controls = f"  [controls: {', '.join(cls.controls)}]" if cls.controls else ""
            print(f"  {name:<24} {cls.description}{controls}")
            print(f"  {'':<24} from {METHODS.origin(name)}")
    for error in plugin_errors():
        print(f"broken plug-in: {error}")
    return 0


def cmd_validate(args) -> int:
    plan = plan_from(args)
    print(f"plan: {len(plan)} runs")
    for cfg in plan:
        print(
            f"  {cfg.task:<22} {cfg.method:<10} seed={cfg.seed:<3} hash={cfg.config_hash()} setup={cfg.setup_hash()} "
            f"{TASKS.get(cfg.task).plan_summary(cfg)}"
        )
        if args.show_config:
            print(json.dumps(cfg.to_dict(), indent=2, default=str))
    return 0


def cmd_status(args) -> int:
    """Which runs of the plan are done, running, queued, failed, diverged or missing; exit 0 only when all are
    done."""
    from gapt_bench.launch import status as launch_status
    from gapt_bench.results.store import compact, has_results

    out = Path(args.results)
    plan = plan_from(args)
    if args.compact:
        n, backup = compact(out)
        print(f"compacted {out}/runs.jsonl: {n} record(s)" + (f" (previous file kept as {backup})" if backup else ""))
    states = launch_status.plan_status(plan, out)
    argv = launch_status.plan_argv(args.tasks, args.methods, args.seeds, args.preset, args.overrides, args.include)
    if not has_results(out):
        print(f"(no results in {out} yet)")
    for line in launch_status.status_lines(states, out, launch_status.resubmit_command(argv, out)):
        print(line)
    return 0 if all(s.state == "done" for s in states) else 1
