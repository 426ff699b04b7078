-- wrk script for the serving variant of benches/e2e.sh: every request is a POST of the body in
-- BENCH_BODY (a model-serving input, application/json); the URL gives the path, -H the token.
local f = assert(io.open(os.getenv("BENCH_BODY") or error("BENCH_BODY is not set"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
