"""scripts/test: its usage, printed before it installs, starts or checks anything."""

import subprocess
from pathlib import Path

import pytest

TEST_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "test"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_usage_and_runs_nothing(flag: str) -> None:
    done = subprocess.run(
        [str(TEST_SCRIPT), flag], capture_output=True, text=True, timeout=10, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: scripts/test [--images] [PYTEST_ARGS...]")
    assert "scripts/test-images" in done.stdout
    assert "apt-get" in done.stdout
    assert done.stderr == "", "nothing (ruff, mypy, installs) may run before the usage"
