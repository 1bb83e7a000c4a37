"""docs/idioms.md is generated from the three implementations: it must match the code and link only tests that exist."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "docs" / "generate_idioms.py"


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_idioms", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gen = load_generator()


def test_guide_is_up_to_date():
    try:
        expected = gen.render()
    except gen.AlignmentError as err:
        pytest.fail(f"{gen.COMMAND} cannot lay the three files side by side:\n{err}", pytrace=False)
    on_disk = gen.OUTPUT.read_text() if gen.OUTPUT.exists() else ""
    if on_disk != expected:
        pytest.fail(f"docs/idioms.md is out of date with the code: run `{gen.COMMAND}`", pytrace=False)


# a linked test: [`test_x.py::test_name`](../tests/test_x.py#L12)
LINK = re.compile(r"\[`[\w.]+::(\w+)`\]\(\.\./(tests/[\w/]+\.py)#L(\d+)\)")


def test_every_linked_test_exists():
    """The links in the file on disk and in the generator's table name test functions that are still there."""
    links = {(path, name) for name, path, _ in LINK.findall(gen.OUTPUT.read_text())}
    links |= {(link.path, link.function) for c in gen.CONVENTIONS for link in c.tests}
    assert links, "no test is linked from docs/idioms.md"
    missing = sorted(f"{path}#{name}" for path, name in links if name not in gen.defined_tests(path))
    assert not missing, f"docs/idioms.md links tests that no longer exist: {missing}; update CONVENTIONS in {GENERATOR.name}"


def test_links_resolve_on_github():
    """Line anchors on the lines they name (GitHub anchors lines, not names); tests/test_readme.py checks the files."""
    text = gen.OUTPUT.read_text()
    lead = text.split("\n## ")[1]
    assert lead.startswith("The conventions that differ"), "docs/idioms.md must lead with the conventions table"
    for name, path, line in LINK.findall(text):
        assert (ROOT / path).read_text().splitlines()[int(line) - 1].lstrip().startswith(f"def {name}("), (path, line, name)
    code_links = re.findall(r'<a href="\.\./(\w+/[\w.]+)#L(\d+)(?:-L(\d+))?">', text)
    assert code_links
    for path, first, last in code_links:
        assert int(last or first) <= len((ROOT / path).read_text().splitlines()), (path, first, last)


def test_generator_imports_only_the_standard_library():
    tree = ast.parse(GENERATOR.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert {name.split(".")[0] for name in names} <= set(sys.stdlib_module_names), names


def test_a_missing_note_or_link_is_refused(monkeypatch):
    """The checks can fail: an absence nobody explains, and a link to a test that does not exist."""
    filename, key, pkg = next((f, k, p) for f, units in gen.NOTES.items() for k, by_pkg in units.items() for p in by_pkg)
    notes = {**gen.NOTES, filename: {**gen.NOTES[filename], key: {p: n for p, n in gen.NOTES[filename][key].items() if p != pkg}}}
    monkeypatch.setattr(gen, "NOTES", notes)
    try:
        gen.align(filename)
    except gen.AlignmentError as err:
        assert f"{key} is absent from {pkg}/{filename}" in str(err)
    else:
        raise AssertionError("an unexplained absence was accepted")
    wrong = gen.Convention("x", "", "", "", (gen.Link("tests/test_negative.py", "test_no_such_thing"),))
    assert gen.check_links((wrong,)) == ["tests/test_negative.py#test_no_such_thing"]
