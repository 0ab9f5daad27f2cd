"""The open-files ceiling: raised to the hard limit at start, a warning before it is reached."""

import logging
import re
import resource
from pathlib import Path

import pytest

from messenger.open_files import OpenFilesWatch, open_files
from messenger.settings import Settings
from tests.processes import serve, service_env

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

    def lowered() -> None:  # as a container runtime's default soft limit would be
        resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, hard))

    with serve(service_env(database), preexec_fn=lowered) as service:
        assert open_files_limits(service.process.pid) == (hard, hard)


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
