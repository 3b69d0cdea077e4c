"""TopK sparse autoencoders: the model, its sparse kernels, training data, training, file formats.

    model.py    TopKSAE and SaeConfig (encode, decode, save/load)
    sparse.py   the K-latent forward/backward kernels of the fast path
    data.py     the activation store as a seeded, resumable, rank-split token stream
    recipe.py   Gao et al.'s training practices: input scale, b_dec init, schedule, optimizer, dead latents
    train.py    init-or-resume, fit, finish: one (layer, expansion) SAE per call
    checkpoint.py  a training run's files: checkpoint, progress log, train.json
    formats.py  export to / import from EleutherAI sparsify and SAELens

The model's names are exported here (``from ard_core.sae import TopKSAE``); training and
format conversion are imported from their modules, so loading an SAE does not pull in
the trainer.
"""

from ard_core.sae.model import ForwardOutput, Latents, SaeConfig, TopKSAE

__all__ = ["ForwardOutput", "Latents", "SaeConfig", "TopKSAE"]
