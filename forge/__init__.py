"""The asset factory: everything that builds what ships under ``assets/``.

``python -m forge`` builds the mini corpus (:mod:`forge.corpus`: espeak-ng
speech, CC0 recordings, synthesized events) and trains the two tiny models the
workbench runs offline (:mod:`forge.tiny_audiollm`, :mod:`forge.tiny_clap`,
sharing :mod:`forge.training` and measured by :mod:`forge.measure`), then
writes their cards from templates (:mod:`forge.cards`). Its settings are
``configs/forge.toml``. The library (``ard_core``) and the pipeline
(``precompute``) never import it: they read what it wrote.
"""
