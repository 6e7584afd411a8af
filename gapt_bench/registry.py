"""Deprecated: the registries moved next to what they hold. Kept for one release so plug-ins keep working.

from gapt_bench.methods import register_method, METHODS   # was gapt_bench.registry
from gapt_bench.tasks import register_task, TASKS         # was gapt_bench.registry
from gapt_bench.launch.plugins import load_plugins        # was gapt_bench.registry
"""

import warnings

from gapt_bench.config.registry import Registry, RegistryError
from gapt_bench.launch.plugins import discover, included, load_plugins, plugin_errors
from gapt_bench.methods import METHODS, register_method
from gapt_bench.tasks import TASKS, register_task

warnings.warn(
    "gapt_bench.registry is deprecated: import register_method from gapt_bench.methods and register_task from "
    "gapt_bench.tasks (this module goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "METHODS",
    "TASKS",
    "Registry",
    "RegistryError",
    "discover",
    "included",
    "load_plugins",
    "plugin_errors",
    "register_method",
    "register_task",
]
