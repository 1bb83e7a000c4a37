"""A parity report for people: the table ``compare`` prints (and ``assert_parity`` raises with), and JUnit XML."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .. import frameworks
from ..parity.floor import DESCRIPTION as FLOOR_DESCRIPTION
from ..parity.report import ParityReport, fact_of
from ..parity.rule import TensorCheck
from ..preprocessing import Preprocessing


def _fmt(value: float | None, spec: str = ".1e") -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else format(value, spec)


def table_rows(report: ParityReport, per_layer: bool) -> list[tuple[str, dict[str, TensorCheck]]]:
    """(row label, framework -> the check shown). Eval mode shows the stem, each stage's last block, the pooled
    features and the logits (every block with ``per_layer``); training shows each fact's worst tensor per
    framework (every tensor with ``per_layer``). The first divergence always has its row."""
    checks = {r.framework: {c.name: c for c in r.checks} for r in report.results}
    names = [c.name for c in report.results[0].checks]
    divergence = report.first_divergence
    if per_layer:
        return [(n, {fw: cs[n] for fw, cs in checks.items()}) for n in names]
    if report.mode == "eval":
        last = {n.split(".")[0]: n for n in names if n.startswith("layer")}
        keep = {"stem", "avgpool", "fc", divergence, *last.values()}
        return [(n, {fw: cs[n] for fw, cs in checks.items()}) for n in names if n in keep]
    rows = []  # training tensors are named 'fact key'
    for fact in dict.fromkeys(map(fact_of, names)):
        group = [n for n in names if fact_of(n) == fact]
        worst = {fw: max((cs[n] for n in group), key=lambda c: c.error / c.limit if c.limit else float("inf"))
                 for fw, cs in checks.items()}
        rows.append((fact, worst))
    if divergence:
        rows.append((divergence, {fw: cs[divergence] for fw, cs in checks.items()}))
    return rows


def format_table(report: ParityReport, per_layer: bool = False) -> str:
    """The human-readable report: per tensor, each framework's error, the floor and their ratio."""
    rule = report.rule
    floor_rule = rule["kind"] == "floor"
    what = ("eval mode" if report.mode == "eval" else
            f"{report.extra['steps']} training steps of {report.extra['recipe']['optimizer']['kind']}, "
            f"batch {report.extra['batch']}")
    lines = [
        f"resnet-parity compare: {report.arch}, {report.dtype}, {what}, reference {frameworks.LABELS[report.source]}, "
        f"input NHWC {tuple(report.inputs['shape'])} ({report.inputs['origin']}), weights {report.weights['origin']}",
        f"rule: {rule['description']}" + ("" if not floor_rule else f"; floor = {FLOOR_DESCRIPTION}"),
    ]
    if report.extra.get("devices", 1) > 1:
        n, source = report.extra["devices"], frameworks.LABELS[report.source]
        lines.append(f"data parallel: every framework on {n} replicas of its own engine, " + (
            f"BN synchronised over the global batch; reference: {source} on one device, batch {report.extra['batch']}"
            if report.extra["sync_bn"] else
            f"BN per replica, running statistics replica 0's; reference: {source} on one device, each of the {n} "
            "shards normalised on its own"))
    if report.mode == "train":
        lines.append("BN running variance compared in the reference's convention: "
                     + ", ".join(f"{frameworks.LABELS[n]} {c}" for n, c in report.extra["bn_variance"].items()))
        if report.extra.get("steps_alone"):
            lines.append("alone@s: step s taken from the float64 truth's state after step s - 1 (weights, BN statistics, "
                         "optimizer state)")
        if report.mode == "train" and not per_layer:
            lines.append("each row: the tensor of that fact furthest towards its limit, per framework")
    lines += [f"note: {note}" for note in report.notes]
    rows = table_rows(report, per_layer)
    width = max(len(label) for label, _ in [*rows, ("tensor", None)])
    head, sub = f"{'tensor':<{width}}", " " * width
    for r in report.results:
        label = frameworks.LABELS[r.framework] + (" (ref)" if r.reference else "")
        head += f" | {label:^33}" if floor_rule else f" | {label:^16}"
        sub += f" | {'error':>8} {'floor':>8} {'ratio':>7} {'ok':>5}" if floor_rule else f" | {'error':>10} {'ok':>5}"
    lines += [head, sub, "-" * len(sub)]
    for label, cells in rows:
        row = f"{label:<{width}}"
        for r in report.results:
            c = cells[r.framework]
            verdict = "ok" if c.passed else "FAIL" if c.binding else "over"
            row += (f" | {_fmt(c.error):>8} {_fmt(c.floor):>8} {_fmt(c.ratio, '.2f'):>7} {verdict:>5}" if floor_rule
                    else f" | {_fmt(c.error):>10} {verdict:>5}")
        lines.append(row)
    lines.append("-" * len(sub))
    for r in report.results:
        parts = [f"{frameworks.LABELS[r.framework]:<9}",
                 f"parameters {r.parameters:,} + {r.bn_statistics:,} BN statistics"
                 + ("" if r.counts_match else f" (expected {report.expected_parameters:,} + "
                                               f"{report.expected_bn_statistics:,}: FAIL)")]
        if report.inputs["origin"] not in ("random",) and r.top1_agree is not None:
            parts.append(f"top-1 agrees {100 * r.top1_agree:.0f}%, top-5 {100 * r.top5_agree:.0f}%")
        parts.append(f"first divergence: {r.first_divergence or 'none'}")
        parts.append("PASS" if r.passed else "FAIL")
        lines.append(" | ".join(parts))
    if floor_rule:
        lines.append(f"ratio = error / floor; a tensor passes while error <= {rule['k']:g} x floor + {rule['atol']:.1e}")
        if any(not c.binding for r in report.results for c in r.checks):
            lines.append("facts after step 1 of each framework's own trajectory are shown, not binding (over: beyond "
                         "the limit); the steps taken alone (alone@s) decide")
    verdict = ("all frameworks agree" if report.passed else
               f"MISMATCH: first divergence at {report.first_divergence or 'the parameter counts'}")
    if "preprocessing" in report.extra:
        lines += format_preprocessing(report.extra["preprocessing"])
        verdict = f"weight parity: {verdict}"
    lines.append(verdict)
    return "\n".join(lines)


def format_preprocessing(found: dict) -> list[str]:
    """The preprocessing section of ``compare --image``: apart from weight parity, and no part of its verdict."""
    expected = Preprocessing.from_dict(found["source"])
    lines = [f"preprocessing (apart from weight parity; the same weights in {frameworks.LABELS[found['framework']]}): "
             f"{found['image']} through {expected.describe()}"]
    for side in found["sides"]:
        habit = Preprocessing.from_dict(side["preprocessing"])
        head = f"  {frameworks.LABELS[side['framework']]:<9} users' {habit.name}"
        if side["same"]:
            lines.append(f"{head}: the same preprocessing")
            continue
        top1 = side["top1"]  # None: a headless backbone's pooled features, no classes
        what = "pooled features" if top1 is None else "logits"
        lines.append(f"{head} vs {expected.name}: {what} differ by {side['relative_difference']:.1e} (relative)"
                     + ("" if top1 is None else ", top-1 agrees" if top1[0] == top1[1]
                        else f", top-1 differs (class {top1[0]} vs {top1[1]})"))
    return lines


JUNIT_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="resnet-parity compare" '


def is_our_junit(path: Path) -> bool:
    """Whether ``path`` is a JUnit report ``compare --junit`` wrote (which a later run may replace): by its start."""
    with open(path, "rb") as f:
        return f.read(len(JUNIT_HEAD)) == JUNIT_HEAD.encode()


def format_junit(report: ParityReport) -> str:
    """JUnit XML with one test case per (reference, target) pair."""
    cases = []
    for r in report.results:
        if r.reference:
            continue
        name = quoteattr(f"{report.source} -> {r.framework}")
        classname = quoteattr(f"resnet-parity.{report.mode}.{report.arch}.{report.dtype}")
        seconds = sum(r.timings.values())
        if r.passed:
            cases.append(f"  <testcase classname={classname} name={name} time=\"{seconds:.3f}\"/>")
            continue
        worst = r.worst()
        message = (f"first divergence: {r.first_divergence or 'parameter counts'}; worst {worst.name}: "
                   f"error {_fmt(worst.error)} against a limit of {_fmt(worst.limit)}")
        detail = "\n".join(f"{c.name}: error {_fmt(c.error)} floor {_fmt(c.floor)} limit {_fmt(c.limit)}"
                           for c in r.checks if c.binding and not c.passed)
        cases.append(f"  <testcase classname={classname} name={name} time=\"{seconds:.3f}\">\n"
                     f"    <failure message={quoteattr(message)}>{escape(detail)}</failure>\n  </testcase>")
    failures = sum(1 for r in report.results if not r.reference and not r.passed)
    return JUNIT_HEAD + f'tests="{len(cases)}" failures="{failures}">\n' + "\n".join(cases) + "\n</testsuite>\n"
