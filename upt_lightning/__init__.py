"""upt_lightning: Universal Physics Transformer surrogates of PDEs with Lightning and Hydra.

Layers, top to bottom; a module imports only from layers below its own (tests/test_package_layout.py
checks that the import graph has no circle):

    train.py, cli (``upt``), sweep, bench/   what users run: training, inference, sweep tables, benchmarks
    pipeline/      one experiment end to end: config checks, stage 1 (cached), stage 2, test, report
    callbacks      the inverse-loss curriculum, the stage-2 latent cache, the trunk freezing of fine-tuning
    modules/       LightningModules: AutoencoderModule (stage 1), OperatorModule (stage 2, training a
                   models.UPT and predicting through it), evaluation; baselines/: the FNO baseline beside them
    losses/        loss terms and OperatorLoss (every weight, its curriculum and frequency);
                   query_sampling; metrics/ (nRMSE, rollouts, spectra as torchmetrics)
    models/        plain torch, no Lightning: UPT (the whole surrogate, ``UPT.from_checkpoint``), GridEncoder,
                   MeshEncoder, LatentOperator, AnyPointDecoder, the normaliser and latent refinement; init_from:
                   which weights of a trained model a new one starts from (fine-tuning)
    data/          solvers -> HDF5 writers -> readers -> windows and DataModules (needs no model code)
    runtime/       run plumbing: checkpoint reading and atomic writes, RNG state, faults, process group, console
    fields, errors field specifications; every error a user can meet, with its fix
"""

__version__ = "0.1.0"
