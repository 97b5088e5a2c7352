-- wrk script for `make bench-serving` / `make soak`: POSTs distinct prompts
-- (one JSON string per line of $AUTOROUTE_PROMPTS, each sent with a unique
-- suffix, so no cache ever hits), pacing each connection by
-- $AUTOROUTE_DELAY_MS between requests, counting answers by status, and
-- printing one `AUTOROUTE {json}` line at the end.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  prompts = {}
  for line in io.lines(os.getenv("AUTOROUTE_PROMPTS")) do prompts[#prompts + 1] = line end
  pace = tonumber(os.getenv("AUTOROUTE_DELAY_MS") or "0")
  path = os.getenv("AUTOROUTE_PATH") or "/route"
  statuses = {}
  counter = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function delay()
  return pace
end

function request()
  counter = counter + 1
  local p = prompts[(counter % #prompts) + 1]
  local body = '{"messages":[{"role":"user","content":' .. p:sub(1, -2) .. ' (#' .. id .. '-' .. counter .. ')"}]}'
  return wrk.format(nil, path, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local parts = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do parts[k] = (parts[k] or 0) + v end
  end
  local s = {}
  for k, v in pairs(parts) do s[#s + 1] = string.format('"%d":%d', k, v) end
  local e = summary.errors
  io.write(string.format(
    'AUTOROUTE {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout, e.status,
    table.concat(s, ",")))
end
