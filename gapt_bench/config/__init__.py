"""How a run is described: typed configs (`schema`), presets and overrides (`presets`), and the generic registry
that resolves the task and method names a config holds (`registry`).

The bottom layer: it imports no other part of gapt_bench. Validating a config against the registered tasks and
methods happens where a plan is resolved (`gapt_bench.launch.plan`).
"""

from gapt_bench.config.presets import (
    apply_overrides,
    deep_merge,
    expand_grid,
    parse_override,
    read_preset_file,
    resolve_preset,
    split_plan_keys,
)
from gapt_bench.config.schema import (
    DIAGNOSTIC_SECTIONS,
    EXECUTION_FIELDS,
    METHOD_SECTIONS,
    SETUP_SECTIONS,
    AlignConfig,
    ConfigError,
    GAPTConfig,
    MBEConfig,
    ModelConfig,
    PeriodicConfig,
    RegConfig,
    RunConfig,
    TrainConfig,
    build_run_config,
    check_values,
    coerce,
    from_dict,
    opt,
    stable_hash,
)

__all__ = [
    "DIAGNOSTIC_SECTIONS",
    "EXECUTION_FIELDS",
    "METHOD_SECTIONS",
    "SETUP_SECTIONS",
    "AlignConfig",
    "ConfigError",
    "GAPTConfig",
    "MBEConfig",
    "ModelConfig",
    "PeriodicConfig",
    "RegConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "build_run_config",
    "check_values",
    "coerce",
    "deep_merge",
    "expand_grid",
    "from_dict",
    "opt",
    "parse_override",
    "read_preset_file",
    "resolve_preset",
    "split_plan_keys",
    "stable_hash",
]
