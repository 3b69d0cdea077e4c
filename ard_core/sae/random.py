"""The frozen random-SAE control: an SAE of a trained one's shape that was never trained.

Random unit-norm decoder rows, the encoder their transpose, zero biases: exactly the
initialisation :meth:`ard_core.sae.TopKSAE.reset_parameters` gives a new SAE before its
first step. Such SAEs come close to trained ones on several of the field's metrics (autointerp
0.87 vs 0.90, sparse probing 0.69 vs 0.72 in one comparison), so every figure we report has
one beside it: the control goes through score, describe, evaluate and the quality stage like
the trained SAEs, under the id of its trained twin with ``-random`` appended
(:func:`ard_core.catalog.control_id`).

With zero biases and the encoder equal to the decoder's transpose, the reconstruction does not
depend on ``input_scale`` (TopK and ReLU commute with a positive scale); the control still gets
the scale a trained SAE of its layer would (:func:`ard_core.sae.recipe.power_of_two_scale` of
the same sample), so its latent values live in the same units as its twin's. ``cfg.json`` marks
it: ``dead_tokens_threshold`` is None (never trained here).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ard_core.sae.model import SaeConfig, TopKSAE
from ard_core.sae.recipe import evaluate, power_of_two_scale

def control_seed(seed: int, layer: int, expansion: int) -> int:
    """The control's generator seed: a function of the run's seed and its shape, apart from the
    seeds trained SAEs start from (ard_core.sae.train uses seed * 1_000_003 + layer * 1009 + expansion)."""
    return seed * 1_000_003 + layer * 1009 + expansion + 500_009


def random_sae(d_in: int, expansion: int, k: int, sample: Tensor, *, model: str, layer: int, seed: int) -> TopKSAE:
    """A frozen random TopK SAE of d_sae = expansion x d_in; ``sample`` (n, d_in) raw tokens of its
    layer set ``input_scale`` as they would for a trained SAE."""
    cfg = SaeConfig(d_in=d_in, d_sae=expansion * d_in, k=k, input_scale=power_of_two_scale(sample.float()),
                    dead_tokens_threshold=None, model=model, layer=layer)
    sae = TopKSAE(cfg)
    sae.reset_parameters(torch.Generator().manual_seed(control_seed(seed, layer, expansion)))
    return sae.eval()


class ControlMetrics(NamedTuple):
    """What the ``saes`` table records of an SAE, measured on a token sample."""

    fvu: float
    l0: float
    dead_frac: float
    """Share of latents that fire on none of the sample's tokens (a trained SAE's counts training tokens)."""


@torch.no_grad()
def sample_metrics(sae: TopKSAE, x: Tensor, chunk: int = 4096) -> ControlMetrics:
    """FVU and L0 as training's :func:`ard_core.sae.recipe.evaluate` measures them, and the dead share."""
    fvu, l0 = evaluate(sae, x.float(), chunk)
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for xb in x.split(chunk):
        acts, idx = sae.encode(xb.float())
        fired[idx[acts > 0].cpu()] = True
    return ControlMetrics(fvu, l0, float((~fired).float().mean()))
