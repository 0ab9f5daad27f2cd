"""wrk against the service: one request shape per run (bench/wrk.lua reads it from the
environment), one wrk thread, and the service process's CPU time around each measured run."""

import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.service import Service
from bench.shell import BenchFailed, run

WRK_LUA = Path(__file__).resolve().with_name("wrk.lua")
MESSAGE_CONTENT = "hello from the benchmark"
# In jwt mode a load without a User-Id reads as this user, a member of every conversation read.
READER = 1
MESSAGE_BODY = json.dumps({"content": MESSAGE_CONTENT})
NEW_KEY_EACH = "*"


@dataclass(frozen=True)
class Load:
    """One HTTP request shape: wrk sends it over and over on `connections` connections."""

    name: str
    path: str
    connections: int
    method: str = "GET"
    body: str = ""
    user_id: int | None = None
    more_paths: tuple[str, ...] = ()  # cycled through with `path`
    idempotency_key: str = ""  # "": none; NEW_KEY_EACH: a new one per request; else this one


def send_load(name: str, conversations: list[int], connections: int, user_id: int) -> Load:
    paths = tuple(f"/conversations/{conversation}/messages" for conversation in conversations)
    return Load(name, paths[0], connections, "POST", MESSAGE_BODY, user_id, paths[1:])


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int  # connect, read and write errors and timeouts (wrk's default timeout: 2 s)
    non_2xx: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    cpu_us_per_request: float = 0.0
    cpu_share: float = 0.0  # of one core: below ~0.9 in a CPU-bound scenario, the machine is busy
    load_average: float = 0.0  # the machine's, over the last minute, when the run ended

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def wrk_command(service: Service, load: Load, seconds: float) -> tuple[list[str], dict[str, str]]:
    command = [
        "wrk",
        "--threads=1",  # one wrk thread outpaces one Python process and leaves it the CPU
        f"--connections={load.connections}",
        f"--duration={max(1, round(seconds))}s",
        f"--script={WRK_LUA}",
        f"{service.url}{load.path}",
    ]
    env = {
        **os.environ,
        "BENCH_METHOD": load.method,
        "BENCH_BODY": load.body,
        "BENCH_USER_ID": "" if load.user_id is None else str(load.user_id),
        "BENCH_PATHS": " ".join((load.path, *load.more_paths)) if load.more_paths else "",
        "BENCH_IDEMPOTENCY_KEY": "",
        "BENCH_IDEMPOTENCY_KEY_PREFIX": "",
        "BENCH_AUTHORIZATION": "",
    }
    if service.tokens is not None:  # the token names the caller, as a jwt-mode client sends it
        caller = READER if load.user_id is None else load.user_id
        env["BENCH_AUTHORIZATION"] = service.tokens.authorization(caller)
        env["BENCH_USER_ID"] = ""
    if load.idempotency_key == NEW_KEY_EACH:  # a prefix per run: no key repeats an earlier run's
        env["BENCH_IDEMPOTENCY_KEY_PREFIX"] = f"{uuid.uuid4().hex}-"
    else:
        env["BENCH_IDEMPOTENCY_KEY"] = load.idempotency_key
    return command, env


def parse_wrk(output: str, cpu_seconds: float = 0.0) -> WrkResult:
    match = re.search(r"^BENCH_RESULT (\{.*\})$", output, re.MULTILINE)
    if match is None:
        raise BenchFailed(f"wrk printed no result line:\n{output}")
    raw = json.loads(match[1])
    requests, seconds = raw["requests"], raw["duration_us"] / 1e6
    return WrkResult(
        requests=requests,
        seconds=seconds,
        errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        non_2xx=raw["non_2xx"],
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        cpu_us_per_request=cpu_seconds / requests * 1e6 if requests else 0.0,
        cpu_share=cpu_seconds / seconds,
        load_average=os.getloadavg()[0],
    )


def warm(service: Service, load: Load, seconds: float) -> None:
    """Load the service for `seconds` unmeasured: caches, plans, connections."""
    if seconds > 0:
        command, env = wrk_command(service, load, seconds)
        run(command, env=env)


def wrk(service: Service, load: Load, seconds: float, warmup: float) -> WrkResult:
    """Load the service for `warmup` seconds unmeasured, then for `seconds` measured."""
    warm(service, load, warmup)
    command, env = wrk_command(service, load, seconds)
    cpu_before = service.cpu_seconds()
    output = run(command, env=env)
    return parse_wrk(output, service.cpu_seconds() - cpu_before)


def combine(rounds: list[WrkResult]) -> WrkResult:
    """Several runs of one load as one: totals, and the means of their percentiles."""
    requests = sum(result.requests for result in rounds)
    seconds = sum(result.seconds for result in rounds)
    return WrkResult(
        requests=requests,
        seconds=seconds,
        errors=sum(result.errors for result in rounds),
        non_2xx=sum(result.non_2xx for result in rounds),
        p50_ms=sum(result.p50_ms for result in rounds) / len(rounds),
        p99_ms=sum(result.p99_ms for result in rounds) / len(rounds),
        mean_ms=sum(result.mean_ms * result.requests for result in rounds) / requests,
        cpu_us_per_request=sum(r.cpu_us_per_request * r.requests for r in rounds) / requests,
        cpu_share=sum(result.cpu_share * result.seconds for result in rounds) / seconds,
        load_average=max(result.load_average for result in rounds),
    )


def median_result(rounds: list[WrkResult]) -> WrkResult:
    """The round with the median throughput (an odd count gives a real round)."""
    ordered = sorted(rounds, key=lambda result: result.rps)
    return ordered[len(ordered) // 2]
