"""ard_core: the library behind the AR&D + AudioLens interpretability workbench.

One concept per module: ``config`` (typed TOML configs), ``models`` (AudioLLM
adapters), ``store`` (activation store), ``catalog`` (the DuckDB feature catalog,
its only writer), ``audio`` (audio I/O), ``sae`` (TopK sparse autoencoders), ...
"""

__version__ = "0.1.0"
