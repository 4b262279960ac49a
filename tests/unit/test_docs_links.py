"""The design lives in the repo: README and docs/ link only to files a clone has."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
OUTSIDE = re.compile(r"\.\./shared|shared/(?:DESIGN|reference)")  # the design note the repo started from
SKIP_DIRS = {".git", ".venv", "data", "build", "node_modules", "__pycache__"}
TEXT = {".py", ".md", ".yaml", ".yml", ".conf", ".sql", ".sh", ".toml", ".service", ".acl"}


def _docs() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_every_relative_link_in_readme_and_docs_resolves_inside_the_repo() -> None:
    broken = []
    for doc in _docs():
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # an absolute URL
            path = (doc.parent / target).resolve()
            if not path.is_relative_to(REPO) or not path.exists():
                broken.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not broken, broken


def test_no_file_points_at_the_design_note_outside_the_repo() -> None:
    offenders = []
    for path in REPO.rglob("*"):
        if path.suffix not in TEXT or SKIP_DIRS & set(path.relative_to(REPO).parts) or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "cite docs/ in the repo instead:\n" + "\n".join(offenders)
