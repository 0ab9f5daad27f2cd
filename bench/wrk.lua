-- wrk script of scripts/bench: one request shape per run, read from the environment, and a
-- summary line the bench parses.
--   BENCH_METHOD   GET or POST (default GET)
--   BENCH_BODY     request body, sent as application/json when set
--   BENCH_USER_ID  value of the User-Id header when set
--   BENCH_AUTHORIZATION  value of the Authorization header when set (AUTH_MODE=jwt)
--   BENCH_PATHS    space-separated paths to cycle through (default: the URL's path only)
--   BENCH_IDEMPOTENCY_KEY         value of the Idempotency-Key header when set (every request
--                                 a repeat of the first), or
--   BENCH_IDEMPOTENCY_KEY_PREFIX  a new Idempotency-Key per request: this prefix and a number
-- Requests are built once here, so wrk spends no Lua time per request beyond picking one
-- (except with a new key per request).

wrk.method = os.getenv("BENCH_METHOD") or "GET"

local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

local user_id = os.getenv("BENCH_USER_ID")
if user_id ~= nil and user_id ~= "" then
  wrk.headers["User-Id"] = user_id
end

local authorization = os.getenv("BENCH_AUTHORIZATION")
if authorization ~= nil and authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end

local paths = os.getenv("BENCH_PATHS")
if paths ~= nil and paths ~= "" then
  local requests = {}
  for path in string.gmatch(paths, "%S+") do
    requests[#requests + 1] = wrk.format(nil, path)
  end
  local next_request = 0
  function request()
    next_request = next_request % #requests + 1
    return requests[next_request]
  end
end

local key = os.getenv("BENCH_IDEMPOTENCY_KEY")
if key ~= nil and key ~= "" then
  wrk.headers["Idempotency-Key"] = key
end

-- Only this case builds a request per call (a new key each), costing wrk some Lua time.
local key_prefix = os.getenv("BENCH_IDEMPOTENCY_KEY_PREFIX")
if key_prefix ~= nil and key_prefix ~= "" then
  local sent = 0
  function request()
    sent = sent + 1
    wrk.headers["Idempotency-Key"] = key_prefix .. sent
    return wrk.format()
  end
end

-- errors.status counts responses that were not 2xx or 3xx; latencies are in microseconds.
function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d,'
      .. ' "write": %d, "timeout": %d, "non_2xx": %d, "p50_us": %d, "p90_us": %d,'
      .. ' "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, errors.connect, errors.read,
    errors.write, errors.timeout, errors.status, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
