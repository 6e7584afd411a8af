"""From run records to answers; computing here, printing in `render`.

Every analysis takes plain record dicts (one JSON object per line of `<results>/runs.jsonl`) and returns a plain,
JSON-ready dict with a "kind"; `render(result, "rich" | "md" | "json")` draws any of them. Nothing here parses
arguments or exits: the CLI maps results and `ReportError` to exit codes.

Modules, one job each:
  common       the error type, the default alpha, JSON-ready cleaning
  groups       grouping records into (task, version, method, config) groups; labels, ordering, directions
  comparisons  method vs reference over seeds (`gapt-bench report`)
  families     the Holm families (report, per-layer, claims) shared by report and paper
  duty         realised duty cycles of a phase-switching method and its schedule control
  paper        the papers' published figures and claims
  claims       the claims side by side with the measurements (`gapt-bench paper`)
  leaderboard  ranking on primary metrics by significant wins (`gapt-bench leaderboard`)
  regression   two result sets: two-sided `compare` and the regression check `regression`
  capacity     capacity and alpha of synthetic_capacity runs
  text_memorization  text_memorization runs: unintended memorization, double descent, extraction, membership
  laws         the capacity paper's laws fitted across runs (membership-inference law, double-descent locator)
  task_analyses  each task's own analyses, and the report with them (what `gapt-bench report` prints)
  runs         per-run tables with the setup fields that tell runs apart (`report --runs`)
  summary      the one-screen summary of a folder (the end of `gapt-bench run`, `report --summary`)
  tables, views, run_views, task_views, render   display: Table, formats, arrows, verdict tones and visible columns (the site uses
               them too); result -> Tables per kind; rich/md/json
"""

from gapt_bench.results.analysis.capacity import (
    analyse_capacity,
    slope_through_origin,
    stopped_on_budget,
)
from gapt_bench.results.analysis.claims import (
    absolute_verdict,
    claim_verdict,
    paper_table,
)
from gapt_bench.results.analysis.common import ALPHA, ReportError, natural_key
from gapt_bench.results.analysis.comparisons import build_report
from gapt_bench.results.analysis.duty import DUTY_TOLERANCE
from gapt_bench.results.analysis.groups import (
    Group,
    controls_by_method,
    group_records,
    is_layer_metric,
    method_order,
    metric_sort_key,
    precision_of,
)
from gapt_bench.results.analysis.leaderboard import leaderboard
from gapt_bench.results.analysis.paper import (
    CAPACITY_TASK,
    MEMORIZATION_TASK,
    PAPER_ALPHA_SLOPE,
    PAPER_CLAIMS,
    Claim,
)
from gapt_bench.results.analysis.regression import compare, machine_classes, regression
from gapt_bench.results.analysis.render import FORMATS, render, tables_of
from gapt_bench.results.analysis.runs import runs_table
from gapt_bench.results.analysis.summary import pick_reference, summary
from gapt_bench.results.analysis.tables import (
    ARROWS,
    VERDICT_TONE,
    Table,
    fmt_mean_ci,
    visible_columns,
)
from gapt_bench.results.analysis.text_memorization import analyse_memorization

__all__ = [
    "ALPHA",
    "ARROWS",
    "CAPACITY_TASK",
    "DUTY_TOLERANCE",
    "FORMATS",
    "MEMORIZATION_TASK",
    "PAPER_ALPHA_SLOPE",
    "PAPER_CLAIMS",
    "VERDICT_TONE",
    "Claim",
    "Group",
    "ReportError",
    "Table",
    "absolute_verdict",
    "analyse_capacity",
    "analyse_memorization",
    "build_report",
    "claim_verdict",
    "compare",
    "controls_by_method",
    "fmt_mean_ci",
    "group_records",
    "is_layer_metric",
    "leaderboard",
    "machine_classes",
    "method_order",
    "metric_sort_key",
    "natural_key",
    "paper_table",
    "pick_reference",
    "precision_of",
    "regression",
    "render",
    "runs_table",
    "slope_through_origin",
    "stopped_on_budget",
    "summary",
    "tables_of",
    "visible_columns",
]
