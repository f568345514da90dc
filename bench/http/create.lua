-- POST /v1/contacts: a new contact of about 320 bytes of fields per request.
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local c = require("common")
local n = 0
setup, init, done = c.setup, c.init, c.done
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/contacts", c.headers, c.contact(math.random(1, 1000000000), n))
end
