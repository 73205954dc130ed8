"""The app's attack settings: paper defaults, presets, widget round trips, validation."""

import dataclasses

import pytest
import torch

from soae_core.analysis.settings import (
    DEFAULT_SETTINGS,
    PRESETS,
    AttackSettings,
    format_eps_255,
    format_power,
    preset_matching,
    preset_values,
    settings_from_widgets,
    widget_values,
)
from soae_core.attacks import SOAE


def test_default_settings_build_the_attack_with_its_own_defaults():
    """The app's defaults are the attack's (the paper's values): same SOAE either way."""
    model = torch.nn.Linear(1, 1)
    app_attack, own_defaults = SOAE(model, **DEFAULT_SETTINGS.soae_kwargs()), SOAE(model)
    for name in ("eps", "eta", "tau", "steps", "alpha", "hvp", "max_krylov", "step_rule", "random_start"):
        assert getattr(app_attack, name) == getattr(own_defaults, name), name
    assert preset_matching(DEFAULT_SETTINGS) == "paper"


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_survives_the_widget_round_trip(name):
    preset = PRESETS[name]
    assert settings_from_widgets(widget_values(preset)) == preset
    assert preset_matching(preset) == name


def test_presets_differ_from_each_other():
    shown = [tuple(sorted((k, str(v)) for k, v in widget_values(p).items())) for p in PRESETS.values()]
    assert len(set(shown)) == len(PRESETS)


def test_changed_widget_is_not_a_preset():
    changed = settings_from_widgets({**widget_values(DEFAULT_SETTINGS), "N": 7})
    assert changed.steps == 7
    assert preset_matching(changed) is None


def test_widget_units_convert_to_pixel_units():
    settings = settings_from_widgets({"eps": 16.0, "alpha": 1.0, "cmp": ["PGD", "FGSM"], "seed": 3})
    assert settings.eps == pytest.approx(16 / 255)
    assert settings.alpha == pytest.approx(16 / 255)  # α = 1·ε for the sign rule
    assert settings.baselines == ("FGSM", "PGD")  # registry order, whatever the widget order
    assert settings.soae_kwargs()["seed"] == 3


def test_raw_rule_uses_the_absolute_alpha():
    settings = dataclasses.replace(DEFAULT_SETTINGS, step_rule="raw", alpha_raw=10.0)
    assert settings.alpha == 10.0
    assert settings.soae_kwargs()["alpha"] == 10.0


def test_off_grid_values_snap_to_the_nearest_choice():
    values = widget_values(dataclasses.replace(DEFAULT_SETTINGS, eps=0.1, eta=3e-5))
    assert values["eps"] == 25.5
    assert values["eta"] == 1e-5


@pytest.mark.parametrize("field, value", [("eps", -0.1), ("eta", 0.0), ("tau", 1.0), ("steps", 0),
                                          ("hvp", "newton"), ("step_rule", "l2"), ("baselines", ("CW",)),
                                          ("max_krylov", 0), ("seed", -1), ("precision", "float16")])
def test_invalid_settings_raise_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(DEFAULT_SETTINGS, **{field: value})


def test_precision_is_a_widget_that_presets_leave_alone():
    float32 = settings_from_widgets({"prec": "float32", "hvp": "exact"})
    assert float32.precision == "float32" and DEFAULT_SETTINGS.precision == "float64"
    assert settings_from_widgets(widget_values(float32)) == float32
    # a preset is matched (and set) whatever the precision, which it leaves as it is
    assert preset_matching(dataclasses.replace(DEFAULT_SETTINGS, precision="float32")) == "paper"
    assert all("prec" not in preset_values(name) for name in PRESETS)
    with pytest.raises(ValueError, match="precision.*float64.*float32"):
        settings_from_widgets({"prec": "half"})


def test_baseline_kwargs_follow_the_budget():
    settings = dataclasses.replace(DEFAULT_SETTINGS, eps=16 / 255)
    assert settings.baseline_kwargs("PGD", "fashion_mnist")["alpha"] == pytest.approx(4 / 255)
    assert settings.baseline_kwargs("ASOD", "fashion_mnist")["sigma"] == 0.7
    assert settings.baseline_kwargs("ASOD", "imagenet")["sigma"] == pytest.approx(100 / 255)
    with pytest.raises(ValueError, match="name"):
        settings.baseline_kwargs("CW", "fashion_mnist")


def test_labels_are_short():
    assert format_eps_255(8.0) == "8/255"
    assert format_eps_255(25.5) == "25.5/255"
    assert [format_power(v) for v in (1e-5, 1e-1, 1.0, 1e3)] == ["1e-5", "1e-1", "1", "1e3"]


def test_as_dict_is_json_ready():
    import json

    values = json.loads(json.dumps(AttackSettings().as_dict()))
    assert values["alpha"] == pytest.approx(2.5 * 8 / 255)
    assert values["baselines"] == ["FGSM", "PGD"]
