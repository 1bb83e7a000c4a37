"""Shared fixtures: each framework, and each other library the tests port checkpoints from, imported once per process."""

from __future__ import annotations

import importlib

import pytest

from shared import frameworks


@pytest.fixture(scope="session")
def impls() -> dict:
    """Short framework name -> implementation package, for every framework (all are test dependencies)."""
    return {name: frameworks.load(name) for name in frameworks.FRAMEWORKS}


def _library(name: str):
    # timm imports torchvision, and so does transformers once torchvision is installed: see install_torchvision_shim
    from pytorch_impl.references import install_torchvision_shim

    install_torchvision_shim()
    with frameworks.quiet_native_stderr():
        return importlib.import_module(name)


@pytest.fixture(scope="session")
def torchvision():
    return _library("torchvision")


@pytest.fixture(scope="session")
def timm():
    return _library("timm")


@pytest.fixture(scope="session")
def transformers():
    return _library("transformers")


@pytest.fixture(scope="session")
def keras_hub():
    return _library("keras_hub")
