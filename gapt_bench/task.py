"""Deprecated: the task interface moved to `gapt_bench.tasks` (`gapt_bench.tasks.base`). Kept for one release.

from gapt_bench.tasks import Task, LMTask, Evaluation, register_task   # was gapt_bench.task
"""

import warnings

from gapt_bench.tasks.base import (
    EpochOrder,
    Evaluation,
    LMTask,
    Task,
    TaskResult,
    mbe_metrics,
    next_token_targets,
    size_vocab_for_tokenizer,
)

warnings.warn(
    "gapt_bench.task is deprecated: import Task, LMTask and Evaluation from gapt_bench.tasks (this module goes away "
    "in the next release)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "EpochOrder",
    "Evaluation",
    "LMTask",
    "Task",
    "TaskResult",
    "mbe_metrics",
    "next_token_targets",
    "size_vocab_for_tokenizer",
]
