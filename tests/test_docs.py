"""docs/design.md is the design document the code cites; every citation must name one of its headings."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
# `docs/design.md, "Heading"` or `docs/design.md ("Heading")`
CITATION = re.compile(r'docs/design\.md(?:,\s*|\s*\()"([^"]+)"')


def _sources():
    for pattern in ("*.py", "*.md", "*.yaml", "Snakefile", "Makefile"):
        for path in ROOT.rglob(pattern):
            rel = path.relative_to(ROOT).as_posix()
            if rel != "tests/test_docs.py" and not rel.startswith((".venv/", ".cache/", "data/", ".git/", ".snakemake/", "reports/")):
                yield rel, path.read_text(errors="replace")


def test_every_citation_of_the_design_document_names_one_of_its_headings():
    headings = {m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$", DESIGN.read_text(), re.M)}
    cited, bad = 0, []
    for rel, text in _sources():
        assert "DESIGN.md" not in text.replace("docs/design.md", ""), f"{rel} cites DESIGN.md, which is not in the repository: cite docs/design.md"
        for m in CITATION.finditer(text):
            cited += 1
            if m.group(1) not in headings:
                bad.append(f"{rel}: {m.group(0)}")
    assert not bad, "citations of headings docs/design.md does not have:\n" + "\n".join(bad) + f"\n(headings: {sorted(headings)})"
    assert cited >= 10
