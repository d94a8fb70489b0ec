"""The package as a new user gets it: the wheel and the sdist built from this tree (with
the venv's setuptools, no download), their contents, the documents read from an
installed layout outside the source tree, and the sdist collecting its own tests.
`make check-dist` runs the sdist's whole suite from an install of it."""

from __future__ import annotations

import ast
import email
import email.message
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from sockprobe import docs
from sockprobe.status import UsageError

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
LEFTOVERS = (
    ".git",
    ".venv*",
    "*.egg-info",
    "build",
    "dist",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source tree (an installed copy of the tests)")
    out = tmp_path_factory.mktemp("dist")
    # From a copy without build leftovers: a stale *.egg-info/SOURCES.txt (an editable
    # install writes one) would put files in the sdist that MANIFEST.in no longer names.
    tree = tmp_path_factory.mktemp("tree") / "sockprobe"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*LEFTOVERS))
    r = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = out.glob("sockprobe-*.whl")
    (sdist,) = out.glob("sockprobe-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "dir": out}


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(z.read(name))


def test_wheel_carries_license_types_marker_and_every_document(dist):
    with zipfile.ZipFile(dist["wheel"]) as z:
        names = set(z.namelist())
        assert "sockprobe/py.typed" in names
        for doc in DOCS:
            assert f"sockprobe/_docs/{doc}" in names, doc
            assert z.read(f"sockprobe/_docs/{doc}") == (ROOT / "docs" / doc).read_bytes()
        (lic,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert "Copyright (c) 2026 sockprobe developers" in z.read(lic).decode()
    assert not [n for n in names if n.startswith(("tests/", "docs/", "bench/"))]


def test_wheel_metadata_license_python_versions_and_no_invented_urls(dist):
    meta = _metadata(dist["wheel"])
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.10"
    classifiers = meta.get_all("Classifier") or []
    for v in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {v}" in classifiers
    assert "Typing :: Typed" in classifiers
    assert not meta.get_all("Project-URL") and not meta["Home-page"]


def _imported_modules() -> set[str]:
    """Top-level names imported anywhere in the runtime package (not tests)."""
    names: set[str] = set()
    for path in (ROOT / "sockprobe").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_every_runtime_dependency_here_is_imported_by_runtime_code(dist):
    """A requirement that applies on this platform is imported by sockprobe itself, and
    psutil (which only tests/conftest.py imports on Linux) is not required on Linux."""
    meta = _metadata(dist["wheel"])
    runtime = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    here = [r for r in runtime if r.marker is None or r.marker.evaluate({"extra": ""})]
    imported = _imported_modules()
    for req in here:
        assert req.name.lower().replace("-", "_") in imported, f"{req} is never imported"
    (ps,) = [r for r in runtime if r.name == "psutil" and "extra" not in str(r.marker)]
    assert ps.marker is not None and not ps.marker.evaluate({"sys_platform": "linux"})
    assert ps.marker.evaluate({"sys_platform": "darwin"})
    dev = [r for r in runtime if r.marker is not None and r.marker.evaluate({"extra": "dev"})]
    assert "psutil" in {r.name for r in dev}, "tests/conftest.py needs psutil on Linux too"


def test_documents_read_from_an_installed_wheel_outside_the_tree(dist, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(dist["wheel"]) as z:
        z.extractall(site)
    # -S -I: no site-packages and no PYTHONPATH, so only the unpacked wheel provides
    # sockprobe; the cwd is outside the source tree, which is never on the path.
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r}); from sockprobe import docs; "
        "print(docs.__file__); print(','.join(docs.topics())); print(docs.read('nagle'), end='')"
    )
    r = subprocess.run(
        [sys.executable, "-S", "-I", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    where, topics, text = r.stdout.split("\n", 2)
    assert where.startswith(str(site))
    assert topics.split(",") == [d.removesuffix(".md") for d in DOCS]
    assert text == (ROOT / "docs" / "nagle.md").read_text()


def test_sdist_holds_what_its_tests_need_and_collects_them(dist, tmp_path):
    with tarfile.open(dist["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        if hasattr(tarfile, "data_filter"):  # 3.10.12+, 3.11.4+, 3.12+
            tar.extractall(tmp_path, filter="data")
        else:
            tar.extractall(tmp_path)
    needed = {"LICENSE", "README.md", "pyproject.toml", "setup.py", "Makefile"}
    needed |= {f"tests/{p.name}" for p in (ROOT / "tests").glob("*.py")}
    needed |= {f"docs/{d}" for d in DOCS}
    assert needed <= names, sorted(needed - names)
    for helper in ("tests/conftest.py", "tests/helpers.py", "tests/netns.py"):
        assert helper in names
    (src,) = tmp_path.glob("sockprobe-*")
    # From the unpacked sdist (its cwd first on sys.path) pytest collects exactly what it
    # collects from the checkout: nothing the tests import is missing from the sdist.
    # (A module that fails to import in the checkout too is its own bug, not packaging's.)
    assert _collect(src) == _collect(ROOT)


def _collect(where: Path) -> tuple[list[str], str]:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=where,
        timeout=120,
    )
    lines = r.stdout.strip().splitlines()
    ids = sorted(line for line in lines if "::" in line and not line.startswith(" "))
    errors = sorted(re.findall(r"ERROR collecting (\S+)", r.stdout))
    last = re.sub(r" in [0-9.]+s.*", "", lines[-1] if lines else "")
    assert ids or errors, r.stdout[-2000:] + r.stderr[-2000:]
    return ids + errors, last


def test_docs_topics_are_the_documents_of_the_tree():
    assert docs.topics() == [d.removesuffix(".md") for d in DOCS]
    text = (ROOT / "docs" / "kernel.md").read_text()
    # As findings cite them ("see docs/kernel.md"), by file name, or by topic.
    for name in ("kernel", "kernel.md", "docs/kernel.md", " Kernel "):
        assert docs.read(name) == text
    if "partial-send" in docs.topics():
        assert docs.read("partial_send") == docs.read("partial-send")
    assert docs.title("kernel") == text.splitlines()[0].lstrip("# ").strip()


def test_docs_unknown_topic_is_a_usage_error_naming_the_choices():
    with pytest.raises(UsageError) as exc:
        docs.read("no-such-probe")
    message = str(exc.value)
    assert "no-such-probe" in message and "\n" not in message
    for topic in docs.topics():
        assert topic in message
