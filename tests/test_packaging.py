"""What a wheel ships: every package directory, the version, the command line's --version."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import setuptools

import shared

ROOT = Path(__file__).resolve().parents[1]


def test_every_directory_of_python_code_is_a_package_the_wheel_ships():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = set(setuptools.find_packages(str(ROOT), include=config["include"]))
    tops = {pattern.rstrip("*") for pattern in config["include"]}
    with_code = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for top in tops for path in (ROOT / top).rglob("*.py") if "__pycache__" not in path.parts
    }
    assert with_code <= shipped, f"not in the wheel: {sorted(with_code - shipped)} (a directory without __init__.py?)"
    assert {"shared.cli", "shared.libraries"} <= shipped


def test_version_is_one_number_in_the_package_and_the_command():
    out = subprocess.run([sys.executable, "-m", "shared.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith(f"resnet-parity {shared.__version__} (")
    assert "torch " in out.stdout and "tensorflow " in out.stdout and "flax " in out.stdout
