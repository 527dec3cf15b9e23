"""upt_lightning: Universal Physics Transformer surrogates of PDEs with Lightning and Hydra.

Layers (imports point downward only):
    modules/, baselines/ (LightningModules) -> callbacks -> data/ -> losses, query_sampling, metrics -> models/
"""

__version__ = "0.1.0"
