"""The hyperparameter search optimises a validation metric over weights that train as sampled."""

import re

from helpers.entry import compose_train


def _interval(spec: str) -> tuple[float, float]:
    low, high = re.search(r"interval\(([^,]+),([^)]+)\)", spec).groups()
    return float(low), float(high)


def test_default_objective_is_a_validation_metric():
    cfg = compose_train(["+experiment=burgers_upt"])
    assert cfg.objective.startswith("val/")


def test_optuna_search_minimises_a_validation_metric_within_the_weight_cap():
    cfg = compose_train(["+experiment=burgers_upt", "hparams_search=lambdas_optuna"], return_hydra_config=True)
    assert cfg.objective == "val/rollout_nrmse_h10"
    assert cfg.hydra.sweeper.direction == "minimize"
    params = cfg.hydra.sweeper.params
    assert set(params) == {"loss.lambda_inv_enc", "loss.lambda_inv_dec"}
    cap = cfg.loss.inverse_loss_max_weight
    for key, spec in params.items():
        low, high = _interval(spec)
        # Every value of the axis trains as sampled: none is silently clipped to the cap.
        assert 0 < low < high <= cap, (key, spec, cap)
