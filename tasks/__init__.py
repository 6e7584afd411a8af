"""The built-in tasks, one folder each: `task.py` (the registered Task class), `presets.yaml`, `README.md`.

Installed as the package `gapt_bench.tasks`; `gapt_bench.registry.discover` imports every `<folder>/task.py`.
"""
