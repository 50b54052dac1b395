-- wrk script: durable registrations through roster's native API, each one a
-- new instance ID (so each is a real change roster must commit before its
-- 2xx), spread over SERVICES services (env, default 1000). The body is the
-- same shape as bench/store/loadgen's (address, port, one tag, one meta
-- entry), so the two clients send the same work.
--
--   wrk -t2 -c64 -d10s --latency -s bench/store/wrk_register.lua http://127.0.0.1:PORT
--
-- wrk counts every response; read "Non-2xx or 3xx responses" (must be
-- absent) before trusting its Requests/sec.

-- wrk embeds LuaJIT (Lua 5.1): bit operations come from its `bit` module.
local services = tonumber(os.getenv("SERVICES") or "1000")
local threads = {}
local next_id = 0

function setup(thread)
    thread:set("tid", next_id)
    next_id = next_id + 1
    table.insert(threads, thread)
end

local counter = 0

function request()
    counter = counter + 1
    local n = counter
    local service = n % services
    local body = string.format(
        '{"address":"10.%d.%d.%d","port":%d,"tags":["bench"],"meta":{"seq":"%d"}}',
        bit.band(bit.rshift(n, 16), 255), bit.band(bit.rshift(n, 8), 255), bit.band(n, 255), 1024 + n % 60000, n)
    return wrk.format("PUT",
        string.format("/v1/services/s%d/instances/w%d-%d", service, tid, n),
        { ["content-type"] = "application/json" }, body)
end
