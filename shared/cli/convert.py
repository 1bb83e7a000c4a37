"""``resnet-parity convert``: read a checkpoint in one format, write it in another, and show both compute the same.

The new file is written beside DST under a temporary name, read back, run on one random batch
against the source weights, and renamed into place only if it agrees: a failed conversion leaves
no DST behind.
"""

from __future__ import annotations

import argparse
import json

from .. import frameworks
from ..checkpoint import FORMATS
from ..convert import convert
from ..parity.rule import FIXED_FLOAT32
from ..preprocessing import Preprocessing
from ..spec import list_specs
from .base import EXIT_FAIL, EXIT_OK, SEED, add_key_options, flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    formats = "; ".join(f"{name}: {f.label}" + (f" ({' '.join(f.suffixes)})" if f.suffixes else "")
                        for name, f in FORMATS.items())
    parser.epilog = (
        f"formats: {formats}. A DST without a suffix is an Orbax directory. Other libraries' directories and files are "
        f"recognised by their config.json or their names (--from where they are not). After writing, SRC and DST are "
        f"loaded into their frameworks (an ONNX DST into onnxruntime) and run on one random batch; DST is kept only if "
        f"the logits agree to {FIXED_FLOAT32:.0e} (relative), else exit 1. Keys under a prefix every key carries "
        f"(module., _orig_mod., model., backbone., encoder., body.) and mmpretrain's backbone.* + head.fc layout are "
        f"unwrapped, with a note; weights without fc are a headless backbone (num_classes=0), verified on its pooled "
        f"features. SRC's preprocessing (what it records, or its library's documented default) is "
        f"reported and written into DST where the format has a place (Hugging Face, keras-hub, timm's pretrained_cfg, "
        f"safetensors metadata). Bad input: one line naming the file, exit 2."
    )
    parser.add_argument("src", metavar="SRC", help="checkpoint to read: a file, or an Orbax directory")
    parser.add_argument("dst", metavar="DST", help="checkpoint to write; its suffix picks the format")
    parser.add_argument("--arch", choices=list_specs(), metavar="NAME",
                        help="preset of SRC (default: what SRC records, else inferred from its weights)")
    parser.add_argument("--from", dest="src_format", choices=[n for n, f in FORMATS.items() if f.readable], metavar="FMT",
                        help="format of SRC (default: by suffix, or by its config or names)")
    parser.add_argument("--to", dest="dst_format", choices=[n for n, f in FORMATS.items() if f.writable], metavar="FMT",
                        help="format of DST (default: by suffix)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing DST (never SRC itself)")
    add_key_options(parser)
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip running both files on a random batch")
    parser.add_argument("--keep-dtype", action="store_true",
                        help="keep float16/bfloat16/float64 weights (default: float32)")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="convert weights holding NaN or Inf instead of refusing")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the random verification batch")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")




def format_report(report: dict) -> str:
    """The human-readable report."""
    t = report["timings"]
    lines = [
        f"{report['src']} ({FORMATS[report['from']].label}) -> {report['dst']} ({FORMATS[report['to']].label})",
        f"architecture: {report['architecture']}",
        *(f"  note: {note}" for note in report["notes"]),
    ]
    pre = report["preprocessing"]
    lines.append("preprocessing: " + ("not recorded in SRC, and its format documents none: prepare inputs as the model "
                                      "was trained" if pre["source"] is None else
                                      Preprocessing.from_dict(pre["source"]).describe()))
    lines += [f"  {note}" for note in pre["written"]]
    if report["written"]:
        lines.append(f"wrote {report['dst']}: {report['tensors']} tensors, {report['values']:,} values, {report['dtype']}, "
                     f"{report['bytes'] / 1e6:.1f} MB; read {t['read_s']:.2f} s, write {t['write_s']:.2f} s "
                     f"(framework imports {t['import_s']:.1f} s)")
    v = report["verification"]
    if v is None:
        lines.append("not verified (--no-verify)")
    else:
        src, dst = (frameworks.LABELS.get(f, f) for f in v["frameworks"])
        same = {True: "yes", False: "no", None: "n/a"}[v["weights_identical"]]
        lines.append(
            f"verify: SRC weights in {src} vs DST read back in {dst}, random batch NHWC {tuple(v['input_shape_nhwc'])}: "
            f"{v['output']} relative error {v['relative_error']:.1e} (tolerance {v['tolerance']:.0e}), weights bit-identical: "
            f"{same} -> {'PASS' if v['passed'] else 'FAIL'}"
        )
        if not v["passed"]:
            lines.append(f"{report['dst']} was not written: the converted file does not compute what {report['src']} does")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = convert(
        args.src, args.dst, arch=args.arch, src_format=args.src_format, dst_format=args.dst_format, force=args.force,
        verify_output=args.verify, keep_dtype=args.keep_dtype, allow_nonfinite=args.allow_nonfinite, seed=args.seed,
        strip_prefix=args.strip_prefix, drop_unexpected=args.drop_unexpected,
    )
    report["notes"] = [flags(note) for note in report["notes"]]
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return EXIT_OK if report["passed"] else EXIT_FAIL
