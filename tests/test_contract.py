"""vitcube.contract: the training recipe's rules and words, strict report numbers, the shared
constants, and an import that stays light. The HTTP side of the same rules is in
tests/service/api/test_searches.py and test_trials.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from tests.factories import BAD_TRAINING_BLOCKS, GOOD_TRAINING_BLOCKS
from tests.imports import modules_loaded_by
from vitcube import contract
from vitcube.contract import (
    CurvePoint,
    InvalidRecipeError,
    TrainingRecipe,
    TrialFailure,
    TrialHeartbeat,
    TrialReport,
)

# -- the training recipe ----------------------------------------------------------------------


@pytest.mark.parametrize(("block", "message"), BAD_TRAINING_BLOCKS)
def test_a_bad_recipe_is_refused_naming_the_key_and_what_is_allowed(
    block: Any, message: str
) -> None:
    with pytest.raises(InvalidRecipeError) as refused:
        TrainingRecipe.from_dict(block)
    assert message in str(refused.value)
    assert isinstance(refused.value, ValueError)  # the worker fails such a trial for good
    # The same words when the block arrives as JSON text (the server's path).
    with pytest.raises(ValidationError) as refused_json:
        TrainingRecipe.model_validate_json(json.dumps(block))
    assert message in str(refused_json.value)


@pytest.mark.parametrize("block", GOOD_TRAINING_BLOCKS)
def test_good_recipes_are_accepted_and_keep_their_values(block: dict[str, Any]) -> None:
    recipe = TrainingRecipe.from_dict(block)
    dumped = recipe.model_dump(mode="json")
    for key, value in block.items():
        assert dumped[key] == value
    # What the server stores is accepted again, unchanged (what a worker receives).
    assert TrainingRecipe.from_dict(dumped) == recipe


def test_defaults_are_the_documented_recipe_with_family_keys_left_null() -> None:
    recipe = TrainingRecipe.from_dict(None)
    assert recipe == TrainingRecipe.from_dict({})
    assert (recipe.epochs, recipe.batch_size, recipe.label_smoothing, recipe.ema_decay) == (
        100,
        64,
        0.1,
        0.9995,
    )
    assert (recipe.grad_clip, recipe.amp, recipe.compile, recipe.antialias) == (
        10.0,
        "auto",
        False,
        True,
    )
    assert (recipe.multiscale_min, recipe.multiscale_max, recipe.multiscale_n) == (0.625, 1.25, 5)
    family_keys = [
        key for key, field in TrainingRecipe.model_fields.items() if field.default is None
    ]
    assert all(getattr(recipe, key) is None for key in family_keys)


def test_v1_resolves_to_ml_cvnets_mobilevit_recipe() -> None:
    recipe = TrainingRecipe().resolved(family="mobilevit_v1", size="s", dataset="imagefolder")
    assert recipe.lr == pytest.approx(0.0005)  # 0.002 at 1024, sqrt rule at 64
    assert recipe.warmup_init_lr == pytest.approx(0.00005) and recipe.min_lr == pytest.approx(5e-5)
    assert (recipe.weight_decay, recipe.decay_norms_and_biases) == (0.01, True)
    assert (recipe.transformer_dropout, recipe.multiscale) == (0.1, True)
    assert (recipe.multiscale_min, recipe.multiscale_max) == (0.625, 1.25)  # 160-320 px at 256
    assert (recipe.crop_interpolation, recipe.crop_scale, recipe.hflip) == (
        "bilinear",
        (0.08, 1.0),
        True,
    )
    assert not recipe.rand_augment and recipe.random_erase_p == 0.0
    assert recipe.mixup_alpha == 0.0 and recipe.cutmix_alpha == 0.0
    xxs = TrainingRecipe().resolved(family="mobilevit_v1", size="xxs", dataset="imagefolder")
    assert xxs.transformer_dropout == 0.05


def test_v2_and_other_families_resolve_to_ml_cvnets_mobilevit_v2_recipe() -> None:
    for family in ("mobilevit_v2", "mobilenet_v2"):
        recipe = TrainingRecipe().resolved(family=family, dataset="cifar10")
        assert (recipe.weight_decay, recipe.decay_norms_and_biases) == (0.05, False)
        assert recipe.warmup_init_lr == pytest.approx(0.0005 / 2000)  # 1e-6 at batch 1024
        assert (recipe.transformer_dropout, recipe.multiscale) == (0.0, False)
        assert (recipe.crop_interpolation, recipe.rand_augment, recipe.random_erase_p) == (
            "bicubic",
            True,
            0.25,
        )
        assert (recipe.mixup_alpha, recipe.cutmix_alpha, recipe.crop_scale) == (
            0.2,
            1.0,
            (0.25, 1.0),
        )


def test_digits_keep_gentle_crops_and_no_glyph_destroying_augmentation() -> None:
    recipe = TrainingRecipe().resolved(family="mobilevit_v2", dataset="digits")
    assert (recipe.crop_scale, recipe.hflip, recipe.rand_augment) == ((0.5, 1.0), False, False)
    assert (recipe.random_erase_p, recipe.mixup_alpha, recipe.cutmix_alpha) == (0.0, 0.0, 0.0)
    assert recipe.weight_decay == 0.05  # the family's keys still apply


@pytest.mark.parametrize(
    ("batch_size", "lr"), [(1024, 0.002), (256, 0.001), (64, 0.0005), (16, 0.00025)]
)
def test_a_null_peak_lr_scales_with_the_square_root_of_the_batch(
    batch_size: int, lr: float
) -> None:
    recipe = TrainingRecipe(batch_size=batch_size).resolved(family="mobilevit_v2", dataset="digits")
    assert recipe.lr == pytest.approx(lr)
    assert recipe.min_lr == pytest.approx(lr / 10)


def test_explicit_values_win_and_resolving_twice_changes_nothing() -> None:
    block = {
        "lr": 0.003,
        "weight_decay": 0.0,
        "decay_norms_and_biases": False,
        "transformer_dropout": 0.0,
        "multiscale": False,
        "rand_augment": True,
        "mixup_alpha": 0.8,
        "hflip": True,
        "crop_scale": [0.3, 1],
    }
    recipe = TrainingRecipe.from_dict(block).resolved(
        family="mobilevit_v1", size="xs", dataset="digits"
    )
    dumped = recipe.model_dump(mode="json")
    assert all(dumped[key] == value for key, value in block.items())
    assert recipe.min_lr == pytest.approx(0.0003) and recipe.warmup_init_lr == pytest.approx(0.0003)
    assert recipe.resolved(family="mobilevit_v2", dataset="cifar10") == recipe


def test_an_explicit_value_that_contradicts_the_scaled_lr_says_where_the_lr_came_from() -> None:
    recipe = TrainingRecipe.from_dict({"min_lr": 0.001})  # fine until the peak is known
    with pytest.raises(InvalidRecipeError) as refused:
        recipe.resolved(family="mobilevit_v2", dataset="digits")
    text = str(refused.value)
    assert "training.min_lr must be in [0, lr] = [0, 0.0005], got 0.001" in text
    assert "sqrt(batch_size / 1024)" in text


def test_every_key_names_itself_and_its_kind_when_given_the_wrong_type() -> None:
    for key, field in TrainingRecipe.model_fields.items():
        with pytest.raises(InvalidRecipeError) as refused:
            TrainingRecipe.from_dict({key: {"not": "a value"}})
        text = str(refused.value)
        assert text.startswith(f"training.{key} must be "), text
        assert ("or null" in text) == (field.default is None), text


def test_every_bad_key_is_reported_at_once() -> None:
    with pytest.raises(InvalidRecipeError) as refused:
        TrainingRecipe.from_dict({"lr": -1, "batch_size": 0})
    assert "training.lr must be" in str(refused.value)
    assert "training.batch_size must be" in str(refused.value)


def test_integer_values_are_fine_where_a_number_is_meant() -> None:
    recipe = TrainingRecipe.model_validate_json('{"lr": 1, "crop_scale": [1, 1], "grad_clip": 5}')
    assert recipe.lr == 1.0 and recipe.crop_scale == (1.0, 1.0) and recipe.grad_clip == 5.0
    assert isinstance(recipe.lr, float)


def test_a_recipe_is_frozen() -> None:
    recipe = TrainingRecipe()
    with pytest.raises(ValidationError):
        recipe.epochs = 3  # type: ignore[misc]


# -- strict numbers in worker reports ---------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        (CurvePoint, {"epoch": 1, "epoch_time_s": True}),
        (CurvePoint, {"epoch": True}),
        (CurvePoint, {"epoch": 1.0}),
        (CurvePoint, {"epoch": 1, "val_top1": "0.5"}),
        (TrialReport, {"lease_id": "l", "top1": True}),
        (TrialReport, {"lease_id": "l", "top1": 0.5, "macs": 1.5}),
        (TrialReport, {"lease_id": "l", "top1": 0.5, "surrogate": "true"}),
        (TrialHeartbeat, {"lease_id": "l", "epoch": False}),
        (TrialHeartbeat, {"lease_id": "l", "metrics": {"train_loss": True}}),
        (TrialFailure, {"lease_id": "l", "error": "x", "retry": 1}),
    ],
)
def test_worker_reports_refuse_booleans_and_strings_for_numbers(
    schema: type[Any], body: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        schema.model_validate(body)
    with pytest.raises(ValidationError):
        schema.model_validate_json(json.dumps(body))


def test_a_worker_fault_is_retryable_and_off_by_default() -> None:
    with pytest.raises(ValidationError, match="worker_fault true needs retry true"):
        TrialFailure(lease_id="l", error="Xid 79", retry=False, worker_fault=True)
    assert TrialFailure(lease_id="l", error="x", retry=True).worker_fault is False
    with pytest.raises(ValidationError):  # strict, as every flag a worker sends
        TrialFailure.model_validate({"lease_id": "l", "error": "x", "worker_fault": 1})


def test_worker_reports_take_json_integers_where_a_float_is_meant() -> None:
    report = TrialReport.model_validate_json(
        '{"lease_id": "l", "top1": 1, "latency_ms": 3, "curve": [{"epoch": 2, "epoch_time_s": 7}]}'
    )
    assert report.top1 == 1.0 and report.latency_ms == 3.0
    assert report.curve[0].epoch_time_s == 7.0
    beat = TrialHeartbeat.model_validate({"lease_id": "l", "epoch": 1, "metrics": {"lr": 0}})
    assert beat.metrics == {"lr": 0.0}


# -- constants shared with models/ and search/ -------------------------------------------------


def test_factor_names_and_default_space_match_models_and_search() -> None:
    # models/ and search/ may not import the contract, so they keep their own copies.
    from vitcube import models
    from vitcube.search import space

    assert contract.FACTORS == tuple(models.FACTORS) == tuple(space.FACTORS)
    assert dict(contract.DEFAULT_SPACE) == dict(space.DEFAULT_SPACE)
    assert list(contract.DEFAULT_SPACE) == list(contract.FACTORS)


def test_states_and_kinds_are_the_documented_ones() -> None:
    assert contract.TRIAL_STATES == (
        "queued",
        "running",
        "paused",
        "completed",
        "failed",
        "stopped",
    )
    assert set(contract.SEARCH_STATES) == {"running", "paused", "completed", "stopped", "failed"}
    assert set(contract.DATASET_CLASSES) < set(contract.DATASETS)
    assert "imagefolder" in contract.DATASETS and "imagefolder" not in contract.DATASET_CLASSES


def test_importing_the_contract_imports_nothing_heavy_and_nothing_of_ours() -> None:
    heavy = ("torch", "numpy", "fastapi", "starlette", "sqlalchemy", "httpx", "sklearn")
    ours = ("vitcube.models", "vitcube.search", "vitcube.service", "vitcube.workers", "vitcube.cli")
    assert modules_loaded_by("import vitcube.contract", (*heavy, *ours)) == []


def test_rungs_grow_by_eta_and_end_at_the_full_training() -> None:
    asha = contract.AshaSchedule(kind="asha", min_epochs=3, eta=3)
    assert contract.rung_epochs(asha, 100) == (3, 9, 27, 81, 100)
    assert contract.rung_epochs(asha, 81) == (3, 9, 27, 81)
    assert contract.rung_epochs(asha, 3) == (3,)
    assert contract.rung_epochs(contract.FullSchedule(kind="full"), 100) == (100,)


def test_the_default_schedule_is_asha_only_when_three_whole_rungs_fit() -> None:
    assert contract.default_schedule(300) == contract.AshaSchedule(
        kind="asha", min_epochs=11, eta=3, brackets=2
    )
    assert contract.default_schedule(9) == contract.AshaSchedule(
        kind="asha", min_epochs=1, eta=3, brackets=2
    )
    assert contract.default_schedule(8) == contract.FullSchedule(kind="full")
    assert contract.default_schedule(1) == contract.FullSchedule(kind="full")
