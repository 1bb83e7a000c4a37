"""The lockstep run: the same steps of a recipe's dataset in every framework from the first framework's initial
weights, each step's loss and each framework's parameter drift from the float64 truth against the limit the
reference's own float32 drift sets (the rule of ``shared.parity.rule``)."""

from __future__ import annotations

import numpy as np

from .. import frameworks
from ..datasets import iterate_batches
from ..errors import ResNetParityError
from ..recipe import Recipe
from ..train import data_spec, epoch_seed, load_data, run_steps
from ..weights import BN_STAT_SUFFIXES
from .rule import check_tensors, rule_for


def train_all_frameworks(
    recipe: Recipe, *, names: list[str], steps: int, seed: int = 0, data_dir: str | None = None, limit: int | None = None,
) -> dict:
    """The same ``steps`` steps in every framework, from the first framework's initial weights; losses and drift per step."""
    if steps < 1:
        raise ResNetParityError(f"steps={steps}: must be >= 1")
    ds = load_data(recipe, data_dir, limit)
    spec = data_spec(recipe, ds)
    batches: list[tuple[np.ndarray, np.ndarray]] = []
    epoch = 0
    while len(batches) < steps:
        epoch += 1
        more = list(iterate_batches(ds.x_train, ds.y_train, recipe.batch_size, seed=epoch_seed(seed, epoch), drop_last=True))
        if not more:
            raise ResNetParityError(f"batch size {recipe.batch_size} exceeds the {len(ds.x_train)} training images")
        batches += more[: steps - len(batches)]
    reference = names[0]
    weights = frameworks.load(reference).export_weights(frameworks.load(reference).build_model(spec, seed=seed))
    # the truth: the reference framework in float64 on the same weights and batches (the rule's)
    wide = {k: v.astype(np.float64) for k, v in weights.items()}
    truth = run_steps(reference, spec, wide, [(x.astype(np.float64), y) for x, y in batches], recipe, dtype="float64")
    runs = {n: run_steps(n, spec, weights, batches, recipe) for n in names}
    rule = rule_for("float32", "train", None)
    losses: dict[str, list[float]] = {n: [] for n in names}
    drift: dict[str, list[float]] = {n: [] for n in names}
    limit: dict[str, list[float]] = {n: [] for n in names[1:]}
    with frameworks.load(reference).numerics("float64"):
        for _ in range(steps):
            after = {n: next(run) for n, run in runs.items()}
            true = {k: v for k, v in next(truth)[2].items() if not k.endswith(BN_STAT_SUFFIXES)}
            for n in names:
                losses[n].append(after[n][0])
                checks = check_tensors(list(true), after[n][2], after[reference][2], true, rule)
                drift[n].append(max(c.error for c in checks))
                if n != reference:
                    limit[n].append(max(c.error / c.limit for c in checks))
    return {"arch": spec.name, "dataset": ds.name, "recipe": recipe.to_dict(), "steps": steps, "seed": seed,
            "reference": reference, "rule": rule, "losses": losses, "parameter_drift": drift, "drift_over_limit": limit}
