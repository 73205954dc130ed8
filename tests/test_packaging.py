"""The project as a Python package: pyproject metadata, a wheel that works outside the checkout, lint config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import soae_core

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for top in ("soae_core", "soae_app") for init in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"


def test_console_scripts_point_at_existing_mains():
    import importlib
    scripts = PYPROJECT["project"]["scripts"]
    assert {"soae-train", "soae-evaluate", "soae-lab"} <= set(scripts)
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_version_has_one_source_of_truth():
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "soae_core.__version__"}
    assert "version" not in PYPROJECT["project"]


def test_no_sys_path_manipulation_in_the_tree():
    offenders = [str(path.relative_to(ROOT)) for top in ("soae_core", "soae_app", "bench", "app_pages", "scripts")
                 for path in (ROOT / top).rglob("*.py") if "sys.path" in path.read_text()]
    offenders += ["app.py"] if "sys.path" in (ROOT / "app.py").read_text() else []
    assert offenders == []


def test_launcher_refuses_a_tree_without_the_app(tmp_path, monkeypatch):
    from soae_app import launcher
    monkeypatch.setattr(launcher, "__file__", str(tmp_path / "soae_app" / "launcher.py"))
    with pytest.raises(ValueError, match="checkout"):
        launcher.checkout_root()
    assert launcher.checkout_root.__module__ == "soae_app.launcher"


@pytest.mark.slow
def test_wheel_installs_and_works_outside_the_repository(tmp_path):
    """Build a wheel, install it into an empty folder and use it from a directory outside the checkout."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("soae_lab-*.whl")
    assert wheel.name.startswith(f"soae_lab-{soae_core.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        assert "soae-evaluate = soae_core.evaluate:main" in archive.read(entry_points).decode()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, cwd=tmp_path)
    probe = ("import json, soae_core; from soae_core.models import load_model; from soae_core.data import load_samples;"
             "s = load_samples('fashion_mnist'); m = load_model('fmnist-cnn-std');"
             "print(json.dumps({'file': soae_core.__file__, 'version': soae_core.__version__,"
             " 'n': int(s.labels.shape[0]), 'logits': list(m(s.images[:2]).shape)}))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("SOAE_MODELS_DIR", None)
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).is_relative_to(site)
    assert found["version"] == soae_core.__version__
    assert found["n"] > 0 and found["logits"] == [2, 10]
