"""The package's version: one number, for the wheel (pyproject.toml reads it here), ``shared.__version__`` and
``resnet-parity --version``."""

__version__ = "0.2.0"
