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
--   BENCH_MIXED    "conversation:member:member ..." (the mixed scenario): every request picks,
--                  by BENCH_MIXED_SHARES ("reads sends" percentages, the rest lists), a read
--                  of a conversation, a send into one (body BENCH_MIXED_BODY) or the list of
--                  a user's conversations, as one of its members, chosen at random
--   BENCH_MIXED_TOKENS  "user:token ..." (AUTH_MODE=jwt): the members' bearer tokens
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
  -- Built in init: wrk knows the Host header by then, not while it loads this script (a
  -- request without one is refused: HTTP/1.1 needs exactly one).
  function init(args)
    for path in string.gmatch(paths, "%S+") do
      requests[#requests + 1] = wrk.format(nil, path)
    end
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

local mixed = os.getenv("BENCH_MIXED")
if mixed ~= nil and mixed ~= "" then
  local tokens = {}
  for user, token in string.gmatch(os.getenv("BENCH_MIXED_TOKENS") or "", "(%d+):(%S+)") do
    tokens[user] = token
  end
  local function as(user, extra)  -- the headers naming the caller, as each auth mode wants it
    local headers = extra or {}
    if tokens[user] ~= nil then
      headers["Authorization"] = "Bearer " .. tokens[user]
    else
      headers["User-Id"] = user
    end
    return headers
  end
  local send_body = os.getenv("BENCH_MIXED_BODY")
  local reads, sends, lists, listed = {}, {}, {}, {}
  local read_share, send_share = string.match(os.getenv("BENCH_MIXED_SHARES"), "(%d+) (%d+)")
  read_share, send_share = tonumber(read_share), tonumber(send_share)
  -- Built in init: wrk knows the Host header by then, not while it loads this script.
  function init(args)
    for conversation, first, second in string.gmatch(mixed, "(%d+):(%d+):(%d+)") do
      local path = "/conversations/" .. conversation .. "/messages"
      for _, user in ipairs({first, second}) do
        reads[#reads + 1] = wrk.format("GET", path, as(user))
        local json = {["Content-Type"] = "application/json"}
        sends[#sends + 1] = wrk.format("POST", path, as(user, json), send_body)
        if not listed[user] then
          listed[user] = true
          lists[#lists + 1] = wrk.format("GET", "/conversations", as(user))
        end
      end
    end
  end
  function request()
    local pick = math.random(100)
    if pick <= read_share then
      return reads[math.random(#reads)]
    elseif pick <= read_share + send_share then
      return sends[math.random(#sends)]
    end
    return lists[math.random(#lists)]
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
