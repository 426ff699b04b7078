-- wrk script for the cold-path benchmark: every request carries the next token of a pre-minted
-- list (BENCH_TOKENS, one per line), each thread starting at a different offset.
local path = os.getenv("BENCH_TOKENS") or error("BENCH_TOKENS is not set")
local tokens = {}
for line in io.lines(path) do
  if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
end
assert(#tokens > 0, "no tokens in " .. path)

local i = 0
local headers = { ["Host"] = "bench.local" }

function setup(thread)
  thread:set("offset", math.random(#tokens))
end

function init(args)
  i = (offset or 0) % #tokens
end

function request()
  i = i % #tokens + 1
  headers["Authorization"] = tokens[i]
  return wrk.format("GET", "/bench/resource", headers)
end
