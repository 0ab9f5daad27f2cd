"""requirements.lock, the image's exact dependency set, still matches pyproject.toml.

Offline and fast: the lock is read as text, not resolved again. Every runtime dependency of
pyproject.toml (and of its `container` extra) must be pinned in the lock at a version its
specifier allows, exactly those are the lock's direct entries (`# via messenger`), and every pin
carries hashes. What this cannot see (a new release of a transitive dependency, a dependency
that changed its own requirements) needs the index: `scripts/lock` re-resolves.
"""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
HINT = "run scripts/lock and commit requirements.lock"


def declared() -> dict[str, Requirement]:
    """pyproject.toml's runtime requirements and the container extra's, by normalized name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["container"]
    requirements = [Requirement(line) for line in lines]
    return {canonicalize_name(requirement.name): requirement for requirement in requirements}


def locked() -> dict[str, tuple[Requirement, list[str], list[str]]]:
    """Each pin of the lock: its requirement, its hashes, and what needs it (`# via`)."""
    entries = {}
    # An entry starts at an unindented line; its hashes and `# via` comments are indented.
    for block in re.split(r"\n(?=[^\s#])", LOCK.read_text()):
        if block.startswith("#"):  # the header
            continue
        requirement = Requirement(block.split("\n", 1)[0].rstrip(" \\"))
        hashes = re.findall(r"--hash=(\S+)", block)
        needed_by = re.findall(r"^[ ]+#[ ]+(?:via[ ]+)?(\S.*)$", block, re.M)
        entries[canonicalize_name(requirement.name)] = (
            requirement,
            hashes,
            [item for item in needed_by if item != "via"],
        )
    return entries


def pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement} is not an exact pin; {HINT}"
    return specifier.version


def test_every_declared_dependency_is_pinned_within_its_range():
    lock = locked()
    for name, requirement in declared().items():
        assert name in lock, f"{requirement} is in pyproject.toml but not locked; {HINT}"
        version = pinned_version(lock[name][0])
        assert requirement.specifier.contains(version, prereleases=True), (
            f"the lock pins {name}=={version}, outside pyproject.toml's {requirement}; {HINT}"
        )


def test_the_locks_direct_dependencies_are_exactly_pyprojects():
    direct = {name for name, (_, _, via) in locked().items() if "messenger (pyproject.toml)" in via}
    assert direct == set(declared()), f"the lock was made from another pyproject.toml; {HINT}"


def test_every_pin_is_exact_and_hashed():
    lock = locked()
    assert len(lock) > len(declared())  # the transitive dependencies are locked too
    for name, (requirement, hashes, _) in lock.items():
        pinned_version(requirement)
        assert hashes, f"{name} has no --hash; {HINT}"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", value) for value in hashes), name


def test_the_lock_says_how_to_regenerate_it():
    assert "#    scripts/lock\n" in LOCK.read_text()[:200]


def test_the_image_installs_the_lock_with_hash_checking():
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip (?:download|install) [^\n]*(?:\\\n[^\n]*)*", dockerfile)
    assert installs, "the Dockerfile installs nothing with pip"
    for command in installs:
        assert "--require-hashes" in command, command
        assert "requirements.lock" in command, command
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text().split()
