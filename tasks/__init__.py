"""Task presets (YAML). Installed as the package `gapt_bench.presets`."""
