"""The load benchmark of messenger (scripts/bench): one serving process under wrk, its SQL under
pgbench, and the outbox relay under a sustained send load.

It measures one serving process (one uvicorn process, as one container runs) on loopback, as
users run it: default logging (LOG_LEVEL=info, an access-log line per request) and the
in-process relay on, publishing to its own queue. It prints what runs as it goes, a table of
figures, and one PASS/MISS line per target, and exits 0 whether or not the targets are met;
non-zero means the benchmark itself could not run.

Besides requests/s and latency, each HTTP scenario reports the CPU time the service process
spent per request (from /proc): on a machine shared with other work, throughput moves with the
neighbours' load while CPU per request mostly does not, so it is the figure to compare between
runs and between versions of the service.

Modules: cli (options), run (one run, start to end), scenarios, sustained, wrk (and wrk.lua),
pgbench (its scripts written from messenger.db, and its runs), service, database, figures,
report, targets, output (progress lines), shell (running tools). Not part of the shipped
package (pyproject's packages.find and .dockerignore leave it out).
"""
