"""The documents, from the installed tool (`sockprobe docs [TOPIC]`, like `git help`).

The Markdown files live in the source tree's `docs/` (the README links them there); a
wheel carries them as package data in `sockprobe/_docs/` (setup.py maps that package onto
`docs/`), so every "see docs/kernel.md" a report prints can be followed from any install.
From a source checkout or an editable install the checkout's `docs/` is read instead.
"""

from __future__ import annotations

from pathlib import Path

from sockprobe.status import UsageError

_HERE = Path(__file__).resolve().parent


def _directory() -> Path | None:
    """Where the documents are: the installed package data, else the checkout's docs/
    (recognised by the pyproject.toml beside it, so that a stray `docs` directory in
    site-packages is never mistaken for ours)."""
    installed = _HERE / "_docs"
    if installed.is_dir():
        return installed
    checkout = _HERE.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "docs").is_dir():
        return checkout / "docs"
    return None


def _topics(where: Path | None) -> list[str]:
    if where is None:
        return []
    return sorted(p.stem for p in where.glob("*.md") if p.is_file())


def topics() -> list[str]:
    """Every document's topic, sorted: the file name without `.md` (`nagle`, `port`)."""
    return _topics(_directory())


def _topic_name(topic: str) -> str:
    """`nagle`, `nagle.md`, `docs/nagle.md` (as findings cite them) and `partial_send`
    all name the same document."""
    name = topic.strip().removeprefix("docs/").removesuffix(".md")
    return name.replace("_", "-").lower()


def read(topic: str) -> str:
    """The document's Markdown text; UsageError naming the topics for an unknown one."""
    name = _topic_name(topic)
    where = _directory()
    choices = _topics(where)
    if where is None or not choices:
        raise UsageError("no documents are installed with this copy of sockprobe")
    if name not in choices:
        raise UsageError(f"no document {topic!r}; topics: {', '.join(choices)}")
    return (where / f"{name}.md").read_text(encoding="utf-8")


def title(topic: str) -> str:
    """The document's first heading without its `#` marks (for a list of topics)."""
    for line in read(topic).splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""
