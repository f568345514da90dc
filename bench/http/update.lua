-- PATCH /v1/contacts/{id}, without If-Match, on ids from $IDS chosen at
-- random: the same hot records written by every client at once.
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local c = require("common")
local ids = c.ids()
setup, init, done = c.setup, c.init, c.done
request = function()
  local k = math.random(1, 1000000000)
  local body = string.format('{"title":"Title %d","tags":["t%d"],"custom":{"notes":"%s %d"}}',
    k, k % 97, string.rep("u", 120), k)
  return wrk.format("PATCH", "/v1/contacts/" .. ids[math.random(1, #ids)], c.headers, body)
end
