"""Parity: do the frameworks compute what the reference does, within what the dtype itself allows?

In layers: ``rule`` (the rule, its tolerance table and one tensor's check) and ``report`` (what a check found,
as data and JSON); ``inputs`` (what a check starts from), ``eval`` (``compare``: eval mode), ``training``
(``train_parity``: training steps) and ``lockstep`` (``train_all_frameworks``: every framework on a dataset).
Nothing here prints: ``shared.cli.report`` renders a report, ``shared.testing.assert_parity`` raises with it.
"""

from .eval import compare
from .report import FrameworkResult, ParityReport
from .rule import FIXED_FLOAT32, TOLERANCE, UNIT_ROUNDOFF, Bound, TensorCheck, check_tensors, rule_for
from .training import PARITY_RECIPE, train_parity

__all__ = [
    "FIXED_FLOAT32", "PARITY_RECIPE", "TOLERANCE", "UNIT_ROUNDOFF", "Bound", "FrameworkResult", "ParityReport",
    "TensorCheck", "check_tensors", "compare", "rule_for", "train_parity",
]
