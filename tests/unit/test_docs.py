"""The README and docs/ as a reader follows them: every relative link leads to a file of this checkout, and a link
to a heading (#anchor) to a heading that exists there (GitHub's anchor rule: lower case, punctuation dropped,
spaces to hyphens)."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    heads = [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def broken(page: Path, root: Path = REPO) -> list[str]:
    out = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not this checkout's to check
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            out.append(f"{page.relative_to(root)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(f"{page.relative_to(root)}: {target} (no such heading)")
    return out


def test_every_link_in_the_docs_leads_somewhere() -> None:
    assert [p for p in PAGES if p.exists()] == PAGES
    assert [b for page in PAGES for b in broken(page)] == []


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    (tmp_path / "there.md").write_text("# A heading, here\n")
    page.write_text("[ok](there.md#a-heading-here) [gone](missing.md) [bad](there.md#nope) [web](https://x.org/y)\n")
    assert broken(page, tmp_path) == ["p.md: missing.md (no such file)", "p.md: there.md#nope (no such heading)"]
