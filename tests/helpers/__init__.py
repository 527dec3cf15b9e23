"""Helpers shared by the tests, one module per kind of fixture:

* ``modules``: tiny models, travelling-wave batches and trainers for the LightningModule tests;
* ``entry``: tiny overrides of every experiment, Hydra composition and a ``train.py`` subprocess runner;
* ``bad_input_files``: broken data files and checkpoints for the hostile-input tests;
* ``inverse``: grid and mesh cases for the inverse-loss tests;
* ``latent_cache``: a stage-1 fit and a data file for the latent-cache tests.

The tests import them as ``helpers.<module>``: ``tests/`` is on ``sys.path`` through its conftest.
"""
