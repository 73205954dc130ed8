"""Perturbation anatomy: every number equals the direct computation it stands for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_cnn

from soae_core import metrics
from soae_core.analysis.perturbation_anatomy import (
    distortion_table,
    location_table,
    perturbation_anatomy,
    spatial_layers,
    verdict_table,
)
from soae_core.eight_bit import EIGHT_BIT_COLUMN, rounding_check, verdict_8bit


def setup():
    model = tiny_cnn()
    generator = torch.Generator().manual_seed(4)
    image = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    image[..., 2:6, 2:6] = 0.8  # a square: clear edges
    image = (image + 0.1 * torch.rand(image.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    noise = torch.rand(2, 1, 8, 8, generator=generator, dtype=torch.float64) * 2 - 1
    advs = {"noise": (image + 0.05 * noise[:1]).clamp(0, 1), "sign": (image + 0.05 * noise[1:].sign()).clamp(0, 1)}
    return model, image, 1, advs


def test_tables_equal_the_metrics_library_per_attack():
    model, image, label, advs = setup()
    anatomy = perturbation_anatomy(model, image, label, advs)
    location, distortion = location_table(anatomy), distortion_table(anatomy)
    assert list(location.index) == list(distortion.index) == ["noise", "sign"]
    assert list(location.columns) == ["Edge alignment (Canny)", "Edge alignment (Sobel)", "High-frequency share",
                                      "Saliency similarity", "IG similarity"]
    assert list(distortion.columns) == metrics.default_feature_layers(model) == ["0", "4", "6"]
    for name, adv in advs.items():
        row = location.loc[name]
        assert row["Edge alignment (Canny)"] == pytest.approx(metrics.edge_alignment(image, adv, "canny")[0])
        assert row["Edge alignment (Sobel)"] == pytest.approx(metrics.edge_alignment(image, adv, "sobel")[0])
        assert row["High-frequency share"] == pytest.approx(metrics.high_frequency_share(image, adv)[0])
        for layer, values in metrics.feature_distortion(model, image, adv).items():
            assert distortion.loc[name, layer] == pytest.approx(values[0], rel=1e-9)


def test_feature_maps_and_channels_are_the_most_disturbed_ones():
    model, image, label, advs = setup()
    anatomy = perturbation_anatomy(model, image, label, advs, top_channels=2)
    assert anatomy.map_layers == spatial_layers(model, image) == ["0"]
    with torch.no_grad():
        clean_maps = model[0](image)[0]
        adv_maps = {name: model[0](adv)[0] for name, adv in advs.items()}
    change = sum((maps - clean_maps).flatten(1).norm(dim=1) for maps in adv_maps.values())
    expected = torch.argsort(change, descending=True)[:2].tolist()
    assert anatomy.channels["0"] == expected
    np.testing.assert_allclose(anatomy.clean_feature_maps["0"], clean_maps[expected].numpy(), rtol=1e-12)
    for attack in anatomy.attacks:
        np.testing.assert_allclose(attack.feature_maps["0"], adv_maps[attack.name][expected].numpy(), rtol=1e-12)
        delta = (advs[attack.name] - image)[0].numpy()
        np.testing.assert_allclose(attack.perturbation, delta)
        np.testing.assert_allclose(attack.magnitude, np.abs(delta).mean(axis=0))


@pytest.mark.parametrize("target", ["prediction", "label"])
def test_saliency_is_the_absolute_input_gradient_of_the_attributed_logit(target):
    model, image, label, advs = setup()
    anatomy = perturbation_anatomy(model, image, label, advs, attribution_target=target)
    adv = advs["sign"]
    with torch.no_grad():
        predicted = int(model(adv).argmax())
    attributed = predicted if target == "prediction" else label
    x = adv.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(x)[0, attributed], x)
    np.testing.assert_allclose(anatomy.attacks[1].saliency, gradient.abs().sum(dim=1)[0].numpy(), rtol=1e-10)
    assert anatomy.attacks[1].prediction == predicted


def test_sobel_and_canny_maps_come_from_the_clean_image():
    model, image, label, advs = setup()
    anatomy = perturbation_anatomy(model, image, label, advs)
    np.testing.assert_allclose(anatomy.sobel, metrics.sobel_magnitude(image)[0])
    assert anatomy.canny.dtype == bool and anatomy.canny.any()
    np.testing.assert_array_equal(anatomy.canny, metrics.edge_mask(image, "canny")[0])
    np.testing.assert_array_equal(anatomy.sobel_edges, metrics.edge_mask(image, "sobel")[0])


def test_feature_maps_returns_layer_outputs_and_rejects_unknown_layers():
    model, image, _, _ = setup()
    outputs = metrics.feature_maps(model, image, ["0", "6"])
    with torch.no_grad():
        np.testing.assert_allclose(outputs["0"].numpy(), model[0](image).numpy())
        np.testing.assert_allclose(outputs["6"].numpy(), model(image).numpy())
    with pytest.raises(ValueError, match="not modules"):
        metrics.feature_maps(model, image, ["conv9"])


@pytest.mark.parametrize("change, word", [("no_attacks", "advs"), ("flat_layer", "map_layers"),
                                          ("shape", "same shape"), ("target", "attribution_target")])
def test_bad_inputs_raise_value_errors(change, word):
    model, image, label, advs = setup()
    kwargs = {}
    if change == "no_attacks":
        advs = {}
    elif change == "flat_layer":
        kwargs["map_layers"] = ["4"]
    elif change == "shape":
        advs = {"bad": torch.zeros(1, 1, 4, 4, dtype=torch.float64)}
    else:
        kwargs["attribution_target"] = "logits"
    with pytest.raises(ValueError, match=word):
        perturbation_anatomy(model, image, label, advs, **kwargs)


class _CallsASharedModel(torch.nn.Module):
    """Runs another model's forward pass inside its own: what a concurrent session's thread does
    while this one takes feature maps. torch.fx tracing (which patches Module.__call__ for the
    whole process) fails on exactly this with "module is not installed as a submodule"."""

    def __init__(self, shared: torch.nn.Module) -> None:
        super().__init__()
        self.body = tiny_cnn()
        self._outside = [shared]  # not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._outside[0](x)
        return self.body(x)


def test_feature_maps_leave_other_models_forward_passes_alone():
    model, image, _, _ = setup()
    wrapper = _CallsASharedModel(model).eval()
    outputs = metrics.feature_maps(wrapper, image, ["body.0"])
    with torch.no_grad():
        np.testing.assert_allclose(outputs["body.0"].numpy(), wrapper.body[0](image).numpy())


def test_verdicts_follow_the_target_and_the_8bit_check():
    model, image, label, advs = setup()
    names = tuple(f"c{k}" for k in range(5))
    batch = torch.cat(list(advs.values()))
    predictions = metrics.predictions(model, batch)
    untargeted = perturbation_anatomy(model, image, label, advs)
    table = verdict_table(untargeted, names)
    assert list(table.columns) == ["Prediction", "Success", EIGHT_BIT_COLUMN]
    check = rounding_check(model, batch, torch.full((2,), label))
    assert table["Success"].tolist() == check.adversarial.tolist()
    assert table[EIGHT_BIT_COLUMN].tolist() == [verdict_8bit(a, b) for a, b in
                                                zip(check.adversarial, check.adversarial_8bit, strict=True)]
    # Aim at the class the first example reaches: a success there, whatever the untargeted verdict was.
    target = int(predictions[0]) if int(predictions[0]) != label else (label + 1) % 5
    targeted = perturbation_anatomy(model, image, label, advs, target=target)
    table = verdict_table(targeted, names)
    assert list(table.columns) == ["Target", "Prediction", "Success", EIGHT_BIT_COLUMN]
    assert (table["Target"] == names[target]).all()
    assert table["Success"].tolist() == (predictions == target).tolist()
    check = rounding_check(model, batch, torch.full((2,), label), torch.full((2,), target))
    assert table[EIGHT_BIT_COLUMN].tolist() == [verdict_8bit(a, b) for a, b in
                                                zip(check.adversarial, check.adversarial_8bit, strict=True)]
    # A class no example reaches: every untargeted success becomes a failure.
    other = next(k for k in range(5) if k != label and k not in predictions.tolist())
    missed = verdict_table(perturbation_anatomy(model, image, label, advs, target=other), names)
    assert untargeted.attacks[0].success and not missed["Success"].any()
    assert (missed[EIGHT_BIT_COLUMN] == "not adversarial").all()
    with pytest.raises(ValueError, match="label"):
        perturbation_anatomy(model, image, label, advs, target=9)
