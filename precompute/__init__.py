"""The precompute pipeline: one module per stage, dispatched by ``python -m precompute``."""
