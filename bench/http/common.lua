-- Shared by the scenarios: a bearer token from $TOKEN, per-thread random
-- seeds (each wrk thread has its own Lua state), ids from $IDS, and one JSON
-- line of results that run.sh reads.
local M = {}

M.headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. os.getenv("TOKEN"),
}

function M.ids()
  local ids = {}
  local path = os.getenv("IDS")
  if path then
    for line in io.lines(path) do ids[#ids + 1] = line end
  end
  return ids
end

function M.contact(k, n)
  return string.format(
    '{"name":"Contact %d","email":"c%d_%d@example.com","phone":"+4512345678","title":"Head of Procurement",'
      .. '"tags":["vip","emea"],"custom":{"company":"Acme %d","notes":"%s"}}',
    k, k, n, k % 1000, string.rep("n", 120))
end

local threads = 0
function M.setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function M.init()
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

function M.done(summary, latency)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"seconds":%.3f,"non2xx":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end

return M
