-- One read path alone, to see what each costs (its requests/s on this
-- machine's cores): WHICH=id|list|search|stale|pipeline, over the ids of
-- $IDS. run.sh does not run it; e.g.
--   BENCH_DIR=bench/http TOKEN=... IDS=ids WHICH=pipeline \
--     wrk -t2 -c8 -d10s --latency -s bench/http/path.lua http://127.0.0.1:8080
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local c = require("common")
local ids = c.ids()
setup, init, done = c.setup, c.init, c.done
local paths = {
  id = function() return "/v1/contacts/" .. ids[math.random(1, #ids)] end,
  list = function() return "/v1/contacts?limit=50" end,
  search = function() return "/v1/contacts?limit=20&q=seed" .. math.random(1, 999) .. "@" end,
  stale = function() return "/v1/reports/data-quality/stale?limit=50" end,
  pipeline = function() return "/v1/reports/pipeline" end,
}
local path = paths[os.getenv("WHICH") or "id"] or error("WHICH: id, list, search, stale or pipeline")
request = function()
  return wrk.format("GET", path(), c.headers)
end
