"""What a batched Attack Lab call spends besides the attack: its members' checks (prediction, the
8-bit rounding check, the 8-bit projection, PSNR/SSIM, norms) as one batch — what the app does
since issue 17's follow-up — against the same checks image by image, as it did before.

30 bundled Fashion-MNIST images on the bundled ``fmnist-cnn-trades`` (the classroom benchmark's
same-settings model) in float64 (the app's default precision), the paper's settings; FGSM, PGD and
SOAE; one torch thread; medians of 5 rounds. The three timings per attack come from one run:

- ``attack_s``: the batched attack call alone;
- ``checks_batched_s``: ``attack_lab._outcomes`` on the 30 results at once;
- ``checks_one_by_one_s``: ``attack_lab._outcome`` for each of the 30, one after another.

Run: ``.venv/bin/python bench/measure_batch_outcomes.py``; writes bench/results/batch_outcomes.json.
"""

from __future__ import annotations

import torch
from common import median_seconds, write_result

from soae_core.analysis import attack_lab
from soae_core.analysis.settings import DEFAULT_SETTINGS
from soae_core.attacks import make_attack
from soae_core.data import load_samples
from soae_core.models import load_model

MODEL, IMAGES, ROUNDS = "fmnist-cnn-trades", 30, 5


def main() -> None:
    torch.set_num_threads(1)
    model = load_model(MODEL, dtype=torch.float64)
    samples = load_samples("fashion_mnist")
    images = samples.images[:IMAGES].to(torch.float64)
    labels = samples.labels[:IMAGES]
    results = {}
    for name in ("FGSM", "PGD", "SOAE"):
        kwargs = DEFAULT_SETTINGS.attack_kwargs(name, "fashion_mnist")
        attack = make_attack(name, model, **kwargs)
        adv = attack(images, labels).adv
        evals = [1] * IMAGES

        def checks_batched(attack=attack, adv=adv, name=name, evals=evals) -> None:
            attack_lab._outcomes(model, name, images, labels, None, adv, attack.eps, evals, 0.0)

        def checks_one_by_one(attack=attack, adv=adv, name=name) -> None:
            for i in range(IMAGES):
                attack_lab._outcome(model, name, images[i:i + 1], labels[i:i + 1], None, adv[i:i + 1], attack.eps, 1, 0.0)

        results[name] = {"attack_s": median_seconds(lambda attack=attack: attack(images, labels), ROUNDS, 1),
                         "checks_batched_s": median_seconds(checks_batched, ROUNDS, 1),
                         "checks_one_by_one_s": median_seconds(checks_one_by_one, ROUNDS, 1)}
        row = results[name]
        print(f"{name:<5} attack {row['attack_s']:.3f} s · checks batched {row['checks_batched_s']:.3f} s · "
              f"one by one {row['checks_one_by_one_s']:.3f} s", flush=True)
    path = write_result("batch_outcomes", {"model": f"{MODEL} (bundled weights), float64", "images": IMAGES,
                                           "rounds": ROUNDS, "settings": "paper defaults", "seconds": results})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
