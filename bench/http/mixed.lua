-- What a team's clients do at once: 80% reads (a record by id, a page of a
-- list, a search, a page of a report), 20% writes (new contacts, edits).
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local c = require("common")
local ids = c.ids()
local n = 0
-- The share of writes (WRITES, default 0.2): half creates, half edits.
local writes = tonumber(os.getenv("WRITES") or "0.2")
setup, init, done = c.setup, c.init, c.done
local reads = {
  function() return "/v1/contacts/" .. ids[math.random(1, #ids)] end,
  function() return "/v1/contacts/" .. ids[math.random(1, #ids)] end,
  function() return "/v1/contacts?limit=50" end,
  -- a piece of an email, as people search: "seed" then a number, like the
  -- seeded contacts' (matches a few of them)
  function() return "/v1/contacts?limit=20&q=seed" .. math.random(1, 999) .. "@" end,
  function() return "/v1/reports/data-quality/stale?limit=50" end,
  function() return "/v1/reports/pipeline" end,
}
request = function()
  n = n + 1
  local r = math.random()
  if r >= writes then
    return wrk.format("GET", reads[math.random(1, #reads)](), c.headers)
  elseif r < writes / 2 then
    return wrk.format("POST", "/v1/contacts", c.headers, c.contact(math.random(1, 1000000000), n))
  else
    local body = string.format('{"title":"Title %d"}', math.random(1, 1000000000))
    return wrk.format("PATCH", "/v1/contacts/" .. ids[math.random(1, #ids)], c.headers, body)
  end
end
