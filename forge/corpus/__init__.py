"""The mini corpus builder: plan (:mod:`.plan`), render (:mod:`.speech`, :mod:`.synth`,
:mod:`.augment`), write and record (:mod:`.build`), check (:mod:`.quality`).

Verification of a built corpus is the pipeline's business and lives in the
library (:mod:`ard_core.datasets.corpus`).
"""
