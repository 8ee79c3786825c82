"""`trm-train`'s options become a `TrainConfig` here, in one place."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs

import arc_data
from jd_splits import parse_aggregator_params

from .._config import LoopConfig, TrainConfig
from .._recipes import RECIPES
from .._run import locate_store, read_run_config

# Options that may change when resuming a run; every other one is fixed by the run.
RESUMABLE = {
    "resume",
    "data",
    "steps",
    "eval_every",
    "eval_batch_size",
    "wandb",
    "wandb_project",
    "device",
    "deterministic",
    "progress",
}

# Option name -> TRMConfig field, for the architecture overrides.
_MODEL_FIELDS = {
    "arch": "arch",
    "mlp_t": "mlp_t",
    "pos_encodings": "pos_encodings",
    "puzzle_emb_len": "puzzle_emb_len",
    "hidden_size": "hidden_size",
    "num_heads": "num_heads",
    "l_layers": "L_layers",
    "h_cycles": "H_cycles",
    "l_cycles": "L_cycles",
    "halt_max_steps": "halt_max_steps",
    "act_mode": "act_mode",
    "internal_losses": "internal_losses",
    "dropout": "dropout",
    "differential_loss": "differential_loss",
    "carry_perturbation": "carry_perturbation",
    "dtype": "forward_dtype",
}


def config_from_options(options: dict[str, Any], given: set[str]) -> tuple[TrainConfig, Path]:
    if options["resume"] is not None:
        fixed = sorted(given - RESUMABLE)
        if fixed:
            raise ValueError(
                "a resumed run keeps its configuration; remove "
                + ", ".join("--" + name.rstrip("_").replace("_", "-") for name in fixed)
            )
        run_dir = Path(options["resume"])
        config = read_run_config(run_dir)
        data = attrs.evolve(
            config.data, store=options["data"] or locate_store(config.data, run_dir)
        )
        loop = attrs.evolve(
            config.loop,
            **_given(
                steps=options["steps"],
                eval_every=options["eval_every"],
                eval_batch_size=options["eval_batch_size"],
                device=options["device"],
                deterministic=options["deterministic"],
            ),
        )
        if "eval_every" in given:
            loop = _check_evaluation(arc_data.open_store(data.store), loop, given)
        logging = attrs.evolve(
            config.logging, **_given(wandb=options["wandb"], wandb_project=options["wandb_project"])
        )
        return attrs.evolve(config, data=data, loop=loop, logging=logging), run_dir

    if options["data"] is None:
        raise ValueError("--data STORE is required (build one with `arc-data build`)")
    if options["steps"] is not None and options["epochs"] is not None:
        raise ValueError("give --steps or --epochs, not both")
    store = arc_data.open_store(options["data"])
    meta = store.metadata
    config = RECIPES[options["recipe"]](
        meta.num_puzzle_identifiers, meta.seq_len, options["data"], options["split"]
    )
    model_fields = _given(**{field: options[name] for name, field in _MODEL_FIELDS.items()})
    if model_fields.get("mlp_t") and "pos_encodings" not in model_fields:
        # Token mixing by MLP has no attention for RoPE to act on.
        model_fields["pos_encodings"] = "none"
    model = attrs.evolve(config.model, **model_fields)
    objective = attrs.evolve(
        config.objective,
        **_given(
            aggregator=options["aggregator"],
            engine=options["engine"],
            groups=options["groups"],
            intermediate_weight=options["intermediate_weight"],
            jacobian_covers=options["jacobian_covers"],
        ),
    )
    params = parse_aggregator_params(objective.aggregator, options["aggregator_param"])
    objective = attrs.evolve(objective, aggregator_params=params)
    if objective.uses_internal_losses and not model.cycle_outputs:
        # The ACT model reads every cycle out only when asked to.
        model = attrs.evolve(model, intermediate_outputs=True)
    data = attrs.evolve(
        config.data,
        **_given(
            global_batch_size=options["batch_size"],
            examples_per_draw=options["examples_per_draw"],
            failure_weighted_sampling=options["failure_weighted_sampling"],
            failure_weighting=options["failure_weighting"],
        ),
    )
    optim = attrs.evolve(
        config.optim,
        **_given(
            optimizer=options["optimizer"],
            lr=options["lr"],
            momentum=options["momentum"],
            weight_decay=options["weight_decay"],
            warmup_steps=options["warmup_steps"],
            lr_min_ratio=options["lr_min_ratio"],
            puzzle_emb_lr=options["puzzle_emb_lr"],
            ema=options["ema"],
            freeze_weights=options["freeze_weights"],
        ),
    )
    seed = config.loop.seed if options["seed"] is None else options["seed"]
    steps = options["steps"]
    if options["epochs"] is not None:
        per_epoch = arc_data.TrainSampler(
            store.train,
            data.global_batch_size,
            seed=seed,
            examples_per_draw=data.examples_per_draw,
        )
        accum = options["grad_accum"] or config.loop.grad_accum
        steps = max(1, math.ceil(options["epochs"] * per_epoch.batches_in_epoch() / accum))
    loop = attrs.evolve(
        config.loop,
        **_given(
            steps=steps,
            grad_accum=options["grad_accum"],
            eval_every=options["eval_every"],
            eval_batch_size=options["eval_batch_size"],
            seed=options["seed"],
            device=options["device"],
            compile=options["compile_"],
            deterministic=options["deterministic"],
        ),
    )
    loop = _check_evaluation(store, loop, given)
    logging = attrs.evolve(
        config.logging, **_given(wandb=options["wandb"], wandb_project=options["wandb_project"])
    )
    config = TrainConfig(
        model=model,
        optim=optim,
        objective=objective,
        data=data,
        loop=loop,
        logging=logging,
        init_from=options["init_from"],
    )
    run_dir = options["out"] or Path("runs") / f"{objective.split}-seed{loop.seed}"
    return config, run_dir


def _check_evaluation(store: arc_data.ArcStore, loop: LoopConfig, given: set[str]) -> LoopConfig:
    """`loop`, refused when --eval-every asks to evaluate on a store without a test split
    (it would silently never evaluate); a recipe's own interval is dropped instead, so
    that the run does not claim evaluations it cannot make."""
    if loop.eval_every is None or store.test.num_examples > 0:
        return loop
    if "eval_every" in given:
        raise ValueError(
            f"{store.path}: the store has no test split (built with --test-set none), so "
            "--eval-every has nothing to evaluate; leave it out"
        )
    return attrs.evolve(loop, eval_every=None)


def _given(**changes: Any) -> dict[str, Any]:
    """The changes for `attrs.evolve`, without the options the user did not give (None)."""
    return {key: value for key, value in changes.items() if value is not None}
