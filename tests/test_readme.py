"""The README's commands run as written.

Every `resnet-parity ...` line of a fenced block (a GitHub Actions `run:` step too) runs here in one temporary
directory, in the README's order, after the files it names are made; the ones that take more than a few seconds
are named in LONG, which must name only commands the README has. The pytest example runs as well, and the
format table lists exactly the formats `convert` knows, with what each reads and writes.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import numpy as np
import pytest

from shared.checkpoint import FORMATS
from shared.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text()

# skipped by design, with the reason; a new long command must be added here or the test fails
LONG = {
    "resnet-parity compare --weights my_resnet18.pth --image photo.jpg": "a 224x224 photograph, and Pillow",
    "resnet-parity compare --arch resnet50": "resnet50 at 224x224 and its float64 run: 12-25 s",
    "resnet-parity compare --arch resnet18 --size 64 --train-steps 5": "five steps, float64 and floor samples: minutes",
    "resnet-parity train --framework torch --arch resnet20 --dataset digits --epochs 4": "four epochs of training",
    "resnet-parity bench --arch resnet20 --frameworks torch": "timed rounds of two models",
}


def fenced() -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", TEXT, re.S | re.M)


def commands() -> list[str]:
    """Each distinct `resnet-parity` command of the fenced blocks, in the README's order."""
    found = []
    for _, body in fenced():
        for line in body.splitlines():
            line = re.sub(r"^\s*-?\s*run:\s*", "", line).strip()
            if line.startswith("resnet-parity") and line not in found:
                found.append(line)
    return found


@pytest.fixture
def readme_files(tmp_path, monkeypatch):
    """The files the README's commands name, made as the README says (its own `python -c` line for the checkpoint)."""
    import torch

    monkeypatch.chdir(tmp_path)
    (make_checkpoint,) = re.findall(r'`python -c "(.*?)"`', TEXT)
    exec(make_checkpoint, {})
    state = torch.load("my_resnet18.pth")
    # mmpretrain's ImageClassifier: the network under backbone., its classifier under head.fc.
    mmpretrain = {(f"head.{key}" if key.startswith("fc.") else f"backbone.{key}"): value for key, value in state.items()}
    torch.save(mmpretrain, "mmpretrain_resnet18.pth")
    np.save("val_batch.npy", np.random.default_rng(0).standard_normal((2, 64, 64, 3), dtype=np.float32))
    return tmp_path


def test_the_long_list_names_only_the_readmes_commands():
    assert set(LONG) <= set(commands()), sorted(set(LONG) - set(commands()))


# CPU seconds of this process a short command may take: they took 0.8-2.6 s on the 2-core development machine
# under load (2026-12-06), `compare --arch resnet50` 8.2 s and `compare --image` 6.1 s
SHORT_CPU_S = 5.0


def test_every_short_command_runs_as_written(impls, readme_files, capsys):  # impls: the imports, not timed
    short = [command for command in commands() if command not in LONG]
    assert len(short) >= 8, short  # the extraction finds the README's commands
    for command in short:
        cpu = time.process_time()
        try:
            code = main(shlex.split(command)[1:])
        except SystemExit as exc:  # --version: argparse's action exits
            code = exc.code
        cpu = time.process_time() - cpu
        out, err = capsys.readouterr()
        assert code == 0, f"{command}\nexit {code}\n{out}{err}"
        assert cpu < SHORT_CPU_S, f"{command} took {cpu:.1f} s of CPU: name it in LONG"
    assert Path("parity.xml").read_text().startswith("<?xml")


def test_the_pytest_example_runs(readme_files):
    (example,) = [body for lang, body in fenced() if lang == "python" and "def test_" in body]
    namespace = {}
    exec(example, namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert tests
    for test in tests:
        test()


def test_relative_links_resolve():
    """README's and docs' links to files of the repository (relative, as GitHub resolves them) name files that exist."""
    root = README.parent
    for page in [README, *sorted((root / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\((?!https?:|#)([^)#\s]+)", page.read_text()):
            path = (page.parent / target).resolve()
            assert path.exists(), f"{page.name}: {target}"


def test_the_format_table_lists_every_format_with_what_it_reads_and_writes():
    section = TEXT.split("## Formats", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `")]
    table = {row[0].strip("`"): (row[2] == "yes", row[3] == "yes") for row in rows}
    assert table == {name: (f.readable, f.writable) for name, f in FORMATS.items()}
