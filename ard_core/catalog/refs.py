"""How features and SAEs are named everywhere: ``SAE_ID/K``.

``SAE_ID`` names the model, the layer and the expansion factor (:func:`sae_id_for`), and a
frozen random-SAE control of that shape ends in ``-random`` (:mod:`ard_core.sae.random`); the CLI
(``--feature``), the app's deep links (``?feature=...``), the annotations
file and every table use these references.
"""

from __future__ import annotations

import re
from typing import NamedTuple

RANDOM_SUFFIX = "-random"
"""A random-SAE control's id is its trained twin's id with this appended."""
_SAE_ID_RE = re.compile(r"^(?P<model>.+)-l(?P<layer>\d+)-e(?P<expansion>\d+)(?P<control>-random)?$")


def sae_id_for(model_name: str, layer: int, expansion: int) -> str:
    """'tiny-audiollm', 5, 8 -> 'tiny-audiollm-l5-e8'."""
    model = re.sub(r"[^a-z0-9._-]+", "-", model_name.lower()).strip("-")
    return f"{model}-l{int(layer)}-e{int(expansion)}"


def control_id(sae_id: str) -> str:
    """'tiny-audiollm-l6-e8' -> 'tiny-audiollm-l6-e8-random': the id of its random control."""
    return sae_id + RANDOM_SUFFIX


def is_control(sae_id: str) -> bool:
    """Whether ``sae_id`` names a frozen random-SAE control."""
    return sae_id.endswith(RANDOM_SUFFIX)


def twin_of(sae_id: str) -> str:
    """The trained SAE a control copies the shape of ('...-l6-e8-random' -> '...-l6-e8'); ``sae_id`` itself
    when it is no control."""
    return sae_id[: -len(RANDOM_SUFFIX)] if is_control(sae_id) else sae_id


class SaeIdParts(NamedTuple):
    """What an SAE id names."""

    model: str
    layer: int
    expansion: int


def parse_sae_id(sae_id: str) -> SaeIdParts:
    """'tiny-audiollm-l5-e8' -> SaeIdParts('tiny-audiollm', 5, 8), or a ValueError showing the form; a
    random control's id parses to its twin's parts."""
    m = _SAE_ID_RE.match(sae_id)
    if not m:
        raise ValueError(f"SAE id {sae_id!r} is not of the form MODEL-lLAYER-eEXPANSION[-random] "
                         "(e.g. tiny-audiollm-l5-e8)")
    return SaeIdParts(m["model"], int(m["layer"]), int(m["expansion"]))


class FeatureRef(NamedTuple):
    """Feature ``feature`` of SAE ``sae_id``; ``str()`` gives back ``SAE_ID/K``."""

    sae_id: str
    feature: int

    def __str__(self) -> str:
        return f"{self.sae_id}/{self.feature}"


def parse_feature_ref(ref: str) -> FeatureRef:
    """'tiny-audiollm-l5-e8/123' -> FeatureRef('tiny-audiollm-l5-e8', 123)."""
    sae_id, sep, k = ref.strip().rpartition("/")
    if not sep or not k.isdigit():
        raise ValueError(f"feature reference {ref!r} must be SAE_ID/K, e.g. tiny-audiollm-l5-e8/123")
    parse_sae_id(sae_id)
    return FeatureRef(sae_id, int(k))
