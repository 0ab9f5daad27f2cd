"""The README and docs/: short, every relative link and anchor resolving, the diagram sane."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def links(document: Path) -> list[str]:
    """Markdown links outside code blocks, as written."""
    return LINK.findall(FENCE.sub("", document.read_text()))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    text = FENCE.sub("", document.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_names_an_existing_file_and_heading(document: Path) -> None:
    for target in links(document):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto: are not checked here
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        assert resolved.exists(), f"{document.name}: {target}"
        if anchor:
            assert anchor in anchors(resolved), f"{document.name}: {target}"


def test_the_slug_is_githubs() -> None:
    assert slug("Shutdown: a preStop sleep rather than `SHUTDOWN_GRACE`") == (
        "shutdown-a-prestop-sleep-rather-than-shutdown_grace"
    )
    assert slug("What is validated, and how") == "what-is-validated-and-how"


def test_the_readme_stays_short_with_the_two_commands_early() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first = "\n".join(lines[:60])
    assert "scripts/dev" in first
    assert "scripts/test" in first


def test_the_readme_links_every_document_in_docs() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / "README.md")}
    for document in DOCUMENTS[1:]:
        assert document.resolve() in linked, document.name


def test_the_flow_diagram_is_one_well_formed_flowchart() -> None:
    blocks = re.findall(r"^```mermaid\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    assert len(blocks) == 1
    header, *statements = blocks[0].splitlines()
    assert header == "flowchart LR"
    node = r"\w+(?:\(\[[^\]]+\]\)|\[\([^)]+\)\]|\[\[[^\]]+\]\]|\[[^\]]+\])?"
    edge = re.compile(rf"\s+{node}\s+(?:-->|-\.->)(?:\|[^|]+\|)?\s*{node}")
    for statement in statements:
        assert edge.fullmatch(statement), statement
