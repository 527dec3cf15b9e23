"""Run plumbing, apart from the model and its training logic.

* ``checkpoints``: reading checkpoints safely (``weights_only``), their kind, stage-1 adoption;
* ``checkpoint_io``: atomic checkpoint writes (a killed save never leaves a truncated file);
* ``rng_state``: random-number-generator state carried in checkpoints, for exact resumes;
* ``faults``: fault injection for the reliability tests (kill or fail at a chosen step);
* ``process_group``: a clean exit of a distributed process group on errors;
* ``throughput``: training samples per second and peak accelerator memory of a fit;
* ``console``: Lightning's console output routed through Hydra's logging, without advertisements;
* ``allocator``: freed CPU memory kept in the process (glibc), so large tensors are not faulted in anew.
"""
