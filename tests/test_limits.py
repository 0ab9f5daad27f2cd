"""The open-files ceiling: raised to the hard limit at start, a warning before it is reached."""

import logging
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from messenger.limits import OpenFilesWatch, open_files
from messenger.settings import Settings
from tests.processes import ROOT, service_env, terminate, wait_for_health

LOW_SOFT_LIMIT = 256


def open_files_limits(pid: int) -> tuple[int, int]:
    limits = Path(f"/proc/{pid}/limits").read_text()
    found = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.MULTILINE)
    assert found is not None, limits
    return int(found[1]), int(found[2])


def test_serve_raises_its_soft_open_files_limit_to_the_hard_limit(database: Settings) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= LOW_SOFT_LIMIT:
        pytest.skip(f"the hard limit here ({hard}) leaves nothing to raise")
    env = service_env(database)
    process = subprocess.Popen(
        [sys.executable, "-m", "messenger", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # As a container runtime's default soft limit would.
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, hard)),
    )
    try:
        wait_for_health(f"http://127.0.0.1:{env['PORT']}", process)
        assert open_files_limits(process.pid) == (hard, hard)
    finally:
        terminate(process, within=15)


def test_a_warning_is_logged_once_when_open_files_near_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    count = open_files()
    assert count is not None
    watch = OpenFilesWatch()
    with caplog.at_level(logging.WARNING, logger="messenger.limits"):
        watch.check(limit=count * 100)
        assert caplog.records == []
        watch.check(limit=count + 1)
        watch.check(limit=count + 1)
        assert len(caplog.records) == 1
        assert f"of {count + 1} file descriptors open" in caplog.records[0].getMessage()
        watch.check(limit=count * 100)  # well below again: the next crossing warns again
        watch.check(limit=count + 1)
        assert len(caplog.records) == 2
