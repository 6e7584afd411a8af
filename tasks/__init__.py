"""The tasks: the task interface (`base`: Task, LMTask, the TASKS registry) and the built-in tasks, one folder
each: `task.py` (the registered Task class), `presets.yaml`, `README.md`.

Installed as the package `gapt_bench.tasks`; `TASKS` imports every `<folder>/task.py` on its first lookup.
"""

from gapt_bench.tasks.base import (
    TASKS,
    Evaluation,
    LMTask,
    Task,
    TaskResult,
    register_task,
)

__all__ = ["TASKS", "Evaluation", "LMTask", "Task", "TaskResult", "register_task"]
