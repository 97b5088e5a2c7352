-- wrk script for `make bench-serving` / `make soak`: POSTs distinct prompts
-- (one JSON string per line of $AUTOROUTE_PROMPTS, each sent with a unique
-- suffix, so no cache ever hits), pacing each connection by
-- $AUTOROUTE_DELAY_MS between requests, counting answers by status, timing
-- each answer by its echoed x-request-id (LuaJIT ffi clock) so admitted (2xx)
-- and refused (429/503) answers get their own latency percentiles, and
-- printing one `AUTOROUTE {json}` line at the end.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } autoroute_ts;
  int clock_gettime(int clk_id, autoroute_ts *tp);
]]
local ts = ffi.new("autoroute_ts")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

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
  admitted, refused = {}, {}
  started = {}
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
  local rid = id .. "-" .. counter
  local body = '{"messages":[{"role":"user","content":' .. p:sub(1, -2) .. ' (#' .. rid .. ')"}]}'
  started[rid] = now_us()
  return wrk.format(nil, path, {["x-request-id"] = rid}, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local rid = headers["x-request-id"]
  local t0 = rid and started[rid]
  if t0 then
    started[rid] = nil
    local us = now_us() - t0
    if status >= 200 and status < 300 then
      admitted[#admitted + 1] = us
    elseif status == 429 or status == 503 then
      refused[#refused + 1] = us
    end
  end
end

local function percentiles(xs)
  if #xs == 0 then return '{"n":0}' end
  table.sort(xs)
  local function q(p) return xs[math.max(1, math.min(#xs, math.floor(p * (#xs - 1) + 1.5)))] end
  return string.format('{"n":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}',
    #xs, q(0.50), q(0.90), q(0.99), xs[#xs])
end

function done(summary, latency, requests)
  local parts, adm, ref = {}, {}, {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do parts[k] = (parts[k] or 0) + v end
    for _, v in ipairs(t:get("admitted")) do adm[#adm + 1] = v end
    for _, v in ipairs(t:get("refused")) do ref[#ref + 1] = v end
  end
  local s = {}
  for k, v in pairs(parts) do s[#s + 1] = string.format('"%d":%d', k, v) end
  local e = summary.errors
  io.write(string.format(
    'AUTOROUTE {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},"statuses":{%s},' ..
    '"admitted":%s,"refused":%s}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout, e.status,
    table.concat(s, ","), percentiles(adm), percentiles(ref)))
end
