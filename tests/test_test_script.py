"""scripts/test: its usage, the slowest tests it names, and the warnings it fails on."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_SCRIPT = ROOT / "scripts" / "test"


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


@pytest.mark.timeout(300)
def test_a_run_ends_with_the_ten_slowest_tests() -> None:
    # Every step but the tests themselves, which are narrowed to the usage tests above.
    done = subprocess.run(
        [str(TEST_SCRIPT), f"{Path(__file__)}::test_help_prints_the_usage_and_runs_nothing"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "= slowest 10 durations =" in done.stdout
    assert "2 passed" in done.stdout


@pytest.mark.parametrize(
    ("source", "status"),
    [
        ("import warnings\n\ndef test_warns():\n    warnings.warn('stale', UserWarning)\n", 1),
        ("async def close():\n    pass\n\ndef test_forgets_to_await():\n    close()\n", 1),
        ("def test_quiet():\n    pass\n", 0),
    ],
    ids=["a warning", "a coroutine never awaited", "no warning"],
)
def test_a_warning_fails_the_suite(source: str, status: int, tmp_path: Path) -> None:
    test = tmp_path / "test_example.py"
    test.write_text(source)
    # The project's pytest configuration, on a test of its own.
    configuration = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *configuration, str(test)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == status, done.stdout + done.stderr
