-- wrk script for bench/ingest.py: single-event POSTs, a distinct install id and client IP each.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid
  key = os.getenv("BENCH_KEY") or ""
  run = os.getenv("BENCH_RUN") or "r"
end

function request()
  counter = counter + 1
  local install = string.format("b%s_%d_%08d", run, thread_id, counter)
  local ip = string.format("10.%d.%d.%d", thread_id, math.floor(counter / 250) % 250, counter % 250 + 1)
  local ts = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local body = string.format(
    '{"install_id":"%s","name":"app.start","timestamp":"%s","event_id":"e%s","app_version":"1.2.3","os":"linux","properties":{"command":"init","n":%d}}',
    install, ts, install, counter)
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
    ["X-Forwarded-For"] = ip,
  }, body)
end

function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f}\n',
    summary.requests, summary.duration, errors, summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
