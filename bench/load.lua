-- wrk script of `go run ./bench`: the closed loop of one route.
-- BENCH_MODE: "login" sends a fresh single-use js_code per request
-- ({"code":"<nonce>-<thread>-<n>"}); "pool" cycles through prepared requests,
-- one line per user in BENCH_DATA ("<bearer>\t<json body>"); "get" sends GETs.
-- done() prints one line "WRKJSON {...}" that the bench parses.
local mode = os.getenv("BENCH_MODE")
local path = os.getenv("BENCH_PATH")
local data = os.getenv("BENCH_DATA")
local nonce = os.getenv("BENCH_NONCE")
local threads = {}
local reqs = {}
local n = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  if mode == "pool" then
    for line in io.lines(data) do
      local bearer, body = line:match("^([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", path,
        { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. bearer }, body)
    end
    -- threads start at different users
    n = (tid * 7919) % #reqs
  end
end

function request()
  if mode == "login" then
    n = n + 1
    return wrk.format("POST", path, { ["Content-Type"] = "application/json" },
      '{"code":"' .. nonce .. '-' .. tid .. '-' .. n .. '"}')
  elseif mode == "pool" then
    n = n % #reqs + 1
    return reqs[n]
  end
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
