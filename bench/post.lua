-- wrk script: POST a JSON array of N events (N = first script argument, default 100) and
-- count answers by status, so the benchmark knows exactly how many requests were acknowledged.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local n = tonumber(args[1] or "100")
  local events = {}
  for i = 1, n do
    events[i] = string.format(
      '{"key":"page_view","data":{"user_id":"u%d","path":"/products/%d","referrer":"https://example.com/","n":%d}}',
      i, i, i)
  end
  wrk.method = "POST"
  wrk.path = args[2] or "/events"
  wrk.body = "[" .. table.concat(events, ",") .. "]"
  wrk.headers["Content-Type"] = "application/json"
  ok = 0
  not_ok = 0
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else not_ok = not_ok + 1 end
end

function done(summary, latency, requests)
  local total_ok, total_not_ok = 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_not_ok = total_not_ok + thread:get("not_ok")
  end
  io.write(string.format(
    'WRK_RESULT {"ok": %d, "not_ok": %d, "requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
    total_ok, total_not_ok, summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
