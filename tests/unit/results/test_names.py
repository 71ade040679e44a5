"""The short names of labels and the ignored recipe keys (:mod:`bbvi_kit.results.names`): every
key and plugin named there is one that recipes and the registries really have, so that a renamed
option or plugin cannot leave a label or a grouping rule silently dead."""

from __future__ import annotations

import dataclasses

from bbvi_kit import registry
from bbvi_kit.config.training import TrainingOptions
from bbvi_kit.recipe import Recipe
from bbvi_kit.results.names import (
    ACTIVATION_NAMES,
    ACTIVATION_OPTIONS,
    IGNORED_KEYS,
    OBJECTIVE_NAMES,
    OPTIMIZER_NAMES,
    SHORT_NAMES,
)

SECTIONS = {f.name for f in dataclasses.fields(Recipe)}
PLUGIN_REGISTRIES = {"model": registry.models, "objective": registry.objectives, "optimizer": registry.optimizers,
                     "estimator": registry.estimators, "data": registry.datasets, "schedule": registry.schedules}


def _options_of(section: str) -> set[str]:
    """Every option some registered plugin of ``section`` takes (``training``: the training options)."""
    if section == "training":
        return set(TrainingOptions.model_fields)
    reg = PLUGIN_REGISTRIES[section]
    return {name for plugin in reg.names() for name in reg.get(plugin).Options.model_fields}


def test_every_ignored_key_is_a_recipe_section_or_a_training_option() -> None:
    for key in IGNORED_KEYS:
        section, _, option = key.partition(".")
        assert section in SECTIONS, key
        if option:
            assert option in _options_of(section), key


def test_the_seed_splits_no_group_but_the_batch_size_does() -> None:
    assert "training.seed" in IGNORED_KEYS
    assert "training.batch_size" not in IGNORED_KEYS and "objective.num_particles" not in IGNORED_KEYS


def test_every_key_with_a_symbol_is_an_option_some_plugin_takes() -> None:
    for key in SHORT_NAMES:
        section, _, option = key.partition(".")
        assert section in SECTIONS and option in _options_of(section), key


def test_the_paper_symbols_of_the_main_keys() -> None:
    assert SHORT_NAMES["objective.num_particles"] == "K" and SHORT_NAMES["training.batch_size"] == "B"


def test_every_named_objective_optimizer_and_activation_is_registered() -> None:
    assert set(OBJECTIVE_NAMES) <= set(registry.objectives.names())
    assert set(OPTIMIZER_NAMES) == set(registry.optimizers.names())
    assert set(ACTIVATION_NAMES) <= set(registry.activations.names())


def test_every_activation_option_with_a_symbol_is_an_option_of_a_registered_activation() -> None:
    options = {name for act in registry.activations.names() for name in registry.activations.get(act).Options.model_fields}
    assert set(ACTIVATION_OPTIONS) <= options


def test_no_two_names_of_one_kind_share_a_label() -> None:
    for table in (SHORT_NAMES, OBJECTIVE_NAMES, OPTIMIZER_NAMES, ACTIVATION_OPTIONS):
        assert len(set(table.values())) == len(table)
