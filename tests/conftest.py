"""Shared fixtures: each framework imported once per test process."""

from __future__ import annotations

import pytest

from shared import frameworks


@pytest.fixture(scope="session")
def impls() -> dict:
    """Short framework name -> implementation package, for every framework (all are test dependencies)."""
    return {name: frameworks.load(name) for name in frameworks.FRAMEWORKS}
