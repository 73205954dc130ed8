"""Training CLI end to end on a tiny Fashion-MNIST written here: every method, the model card,
checkpoints, --resume (in process, and after a kill -9 of a real run), and argument errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from dataset_files import write_idx_dataset

import soae_core
from soae_core.experiments.model_card import card_with_inner_attack
from soae_core.experiments.training import TrainConfig, train
from soae_core.experiments.training_objectives import ObjectiveConfig, describe_inner_attack, soae_examples
from soae_core.models import load_model, load_uploaded_model
from soae_core.models.weights import safetensors_metadata
from soae_core.train import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_fashion_mnist(fashion_mnist_files):
    """160 train / 40 test random images (see ``fashion_mnist_files`` in conftest.py)."""
    return fashion_mnist_files(160, 40)


TINY = ["--epochs", "1", "--train-subset", "128", "--batch-size", "64", "--eval-pgd-n", "16", "--eval-soae-n", "4",
        "--no-progress", "--soae-max-krylov", "5"]


@pytest.mark.parametrize("method,evals", [("std", 0), ("pgd", 7), ("trades", 7), ("soat", None)])
def test_one_tiny_epoch_per_method_writes_weights_and_card(method, evals, tiny_fashion_mnist, tmp_path):
    name = "fmnist-cnn-soat" if method == "soat" else f"fmnist-cnn-{method}"
    out = tmp_path / "out"
    args = ["--model", name, "--method", method, *TINY, "--out-dir", str(out), "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(args) == 0
    card = json.loads((out / f"{name}.json").read_text())
    assert card["method"] == method and card["dataset"] == "fashion_mnist" and card["epochs"] == 1
    assert card["trained_eps"] == (None if method == "std" else 0.1)
    assert card["architecture"] == "small-cnn"
    assert card["hyperparameters"]["objective"]["eps"] == 0.1
    assert card["hyperparameters"]["objective"]["alpha"] == pytest.approx(0.025)
    assert card["command"] == "python -m soae_core.train " + " ".join(args)
    assert card["inner_attack"] == describe_inner_attack(ObjectiveConfig(**card["hyperparameters"]["objective"]))
    assert card["machine"]["cores"] >= 1 and card["history"][0]["seconds"] > 0
    assert card["soae_lab_version"] == soae_core.__version__
    assert card["wall_time_s"]["training"] == pytest.approx(card["history"][0]["seconds"], abs=0.01)
    assert card["test_images"] == 40 and 0.0 <= card["clean_accuracy"] <= 1.0
    attacks = {(r["attack"], round(r["eps"], 4)) for r in card["robust_accuracy"]}
    assert attacks == {("PGD-20", 0.1), ("PGD-20", round(8 / 255, 4)), ("SOAE", 0.1), ("SOAE", round(8 / 255, 4))}
    per_example = card["history"][0]["grad_evals_per_example"]
    if evals is None:
        assert per_example >= 2  # one gradient plus at least one Hessian-vector product
    else:
        assert per_example == evals
    assert 0.0 <= card["sample_set_accuracy"] <= 1.0
    model = load_model(name, weights_path=out / f"{name}.safetensors")
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    # The file is what the app's "your own weights" upload takes: it names its architecture.
    data = (out / f"{name}.safetensors").read_bytes()
    assert safetensors_metadata(data) == {"model": name, "architecture": "small-cnn", "method": method}
    upload = load_uploaded_model("small-cnn", data, f"{name}.safetensors")
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(upload.model(images), model(images))
    with pytest.raises(ValueError, match="holds weights for the 'small-cnn' architecture"):
        load_uploaded_model("small-cnn-smooth", data, f"{name}.safetensors")


def _cfg(**objective) -> TrainConfig:
    return TrainConfig(model="fmnist-cnn-pgd", epochs=3, batch_size=32, train_subset=96,
                       objective=ObjectiveConfig(method="pgd", attack_steps=2, **objective))


def test_resume_repeats_the_uninterrupted_run(tiny_fashion_mnist, tmp_path):
    uninterrupted, record = train(_cfg(), tmp_path / "a", progress=False)
    assert record["finished"] and len(record["history"]) == 3
    _, partial = train(_cfg(), tmp_path / "b", progress=False, stop_after_epochs=1)
    assert not partial["finished"]
    resumed, record_b = train(_cfg(), tmp_path / "b", resume=True, progress=False)
    assert [r["loss"] for r in record_b["history"]] == pytest.approx([r["loss"] for r in record["history"]])
    for key, value in uninterrupted.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-6), key


def test_resume_refuses_other_settings(tiny_fashion_mnist, tmp_path):
    train(_cfg(), tmp_path / "ck", progress=False, stop_after_epochs=1)
    with pytest.raises(ValueError, match="other settings.*eps"):
        train(_cfg(eps=0.2), tmp_path / "ck", resume=True, progress=False)


def test_kill_dash_nine_mid_epoch_loses_at_most_that_epoch(tiny_fashion_mnist, tmp_path):
    write_idx_dataset(tiny_fashion_mnist / "FashionMNIST" / "raw", n_train=1500, n_test=20)
    ckpt_dir, out = tmp_path / "ck", tmp_path / "out"
    args = ["--model", "fmnist-cnn-pgd", "--method", "pgd", "--epochs", "4", "--batch-size", "50",
            "--eval-pgd-n", "4", "--eval-soae-n", "2", "--no-progress", "--out-dir", str(out),
            "--checkpoint-dir", str(ckpt_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "soae_core.train", *args, "--resume"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = ckpt_dir / "checkpoint.pt"
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    saved = torch.load(checkpoint, weights_only=True)
    done = saved["epoch"]
    assert 1 <= done < 4 and not (out / "fmnist-cnn-pgd.json").exists()

    assert main([*args, "--resume"]) == 0
    card = json.loads((out / "fmnist-cnn-pgd.json").read_text())
    assert [r["epoch"] for r in card["history"]] == [1, 2, 3, 4]
    assert card["history"][:done] == saved["history"]  # finished epochs were kept, not redone


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "epochs must be an integer >= 1"),
    (["--model", "cifar10-resnet18"], "must be a Fashion-MNIST model"),
    (["--model", "nope"], "name must be one of"),
    (["--eps", "-0.1", "--method", "pgd"], "eps must be > 0"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, tmp_path, capsys):
    assert main([*args, "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_inner_attack_sentence_says_what_each_method_does():
    soat = describe_inner_attack(ObjectiveConfig(method="soat", eps=0.1))
    assert "one SOAE step" in soat and "alpha/N = 0.25" in soat and "random start" in soat
    assert "alpha and attack_steps are PGD's and unused" in soat
    multi = describe_inner_attack(ObjectiveConfig(method="soat", eps=0.1, soae_steps=7, soae_alpha=0.175))
    assert "7 SOAE steps" in multi and "alpha/N = 0.025 each" in multi and "1.75·eps" in multi
    assert describe_inner_attack(ObjectiveConfig(method="pgd")).startswith("PGD: 7 sign-gradient steps of alpha = 0.025")
    assert describe_inner_attack(ObjectiveConfig(method="std")).startswith("none")
    with pytest.raises(ValueError, match="method"):
        describe_inner_attack(ObjectiveConfig(method="fgsm"))


def test_bundled_cards_state_their_inner_attack_from_their_hyperparameters():
    for path in sorted((REPO / "assets" / "models").glob("*.json")):
        card = json.loads(path.read_text())
        assert card_with_inner_attack(card) == card, f"{path.name}: run python -m soae_core.model_card " \
                                                     f"--model {card['name']} --describe-only"
    with pytest.raises(ValueError, match="objective"):
        card_with_inner_attack({"name": "x"})


def test_soat_inner_alpha_sets_the_step():
    torch.manual_seed(0)
    model = load_model("fmnist-cnn-std")
    x = torch.rand(4, 1, 28, 28) * 0.5 + 0.25
    y = torch.zeros(4, dtype=torch.long)
    small = ObjectiveConfig(method="soat", eps=0.1, soae_steps=2, soae_alpha=0.02, soae_random_start=False)
    adv, _ = soae_examples(model, x, y, small)
    assert float((adv - x).abs().max()) == pytest.approx(0.02, abs=1e-6)  # 2 sign steps of 0.01
    default = ObjectiveConfig(method="soat", eps=0.1, soae_steps=1, soae_random_start=False)
    adv, _ = soae_examples(model, x, y, default)
    assert float((adv - x).abs().max()) == pytest.approx(0.1, abs=1e-6)  # 2.5·eps, projected to eps
