"""Training: the model (`model`: build, parameter counts, FLOPs and MFU), the one training loop (`trainer`), the
run context, device and precision (`runtime`) and DDP (`distributed`). Methods and the phase gate: `gapt_bench.methods`.
"""
