-- wrk script for bench/ingest.py: single-event POSTs, every one with its own event id, install
-- id and client IP (X-Forwarded-For, trusted from 127.0.0.1).
--   BENCH_DOOR  native (also the reference app's body) | voicemode | domscribe
--   BENCH_PATH  request path; BENCH_KEY ingest key (native); BENCH_RUN the run's id prefix
--   BENCH_RUN_HEX  8 hex digits that start every VoiceMode telemetry_id (a UUID) of the run
-- done() prints one line: RESULT {json} with responses, 2xx, non-2xx and requests sent.
-- Globals, not locals: done() reads them from each thread with thread:get().
counter = 0
ok = 0
bad = 0
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
  run_hex = os.getenv("BENCH_RUN_HEX") or "00000000"
  door = os.getenv("BENCH_DOOR") or "native"
  path = os.getenv("BENCH_PATH") or "/api/v1/events"
end

local function native_body(ts)
  local install = string.format("%s_%d_%08d", run, thread_id, counter)
  return string.format(
    '{"install_id":"%s","name":"app.start","timestamp":"%s","event_id":"e%s","app_version":"1.2.3","os":"linux","properties":{"command":"init","n":%d}}',
    install, ts, install, counter)
end

local function voicemode_body(ts)
  -- The VoiceMode client's report (tests/contracts/test_voicemode.py), ids unique per request.
  local telemetry_id = string.format("%s-%04x-4%03x-8000-%012x", run_hex, thread_id, counter % 4096, counter)
  return string.format(
    '{"telemetry_id":"%s","timestamp":"%s","period_start":"%s","period_end":"%s",'
      .. '"environment":{"os":"Linux","install_method":"uv","mcp_host":null,"exec_source":"mcp","version":"7.0.1"},'
      .. '"usage":{"total_sessions":3,"total_exchanges":12,"duration_distribution":{"<1min":1,"1-5min":2},'
      .. '"exchanges_per_session":{"1-5":3},"transport_usage":{"local":3},'
      .. '"provider_usage":{"tts":{"kokoro":6},"stt":{"whisper-local":6}}},"event_id":"v%s_%d_%08d"}',
    telemetry_id, ts, ts, ts, run, thread_id, counter)
end

local platforms = { "darwin", "linux", "win32", "freebsd", "openbsd" }
local frameworks = { "react", "vue", "next", "nuxt", "svelte", "astro", "solid", "unknown" }

local function domscribe_body()
  -- The daemon's six strict fields (CONTRACTS B1); a new session id per request.
  return string.format(
    '{"protocol_version":"1.0.0","daemon_version":"0.4.2","session_id":"%s_%d_%08d",'
      .. '"platform":"%s","node_version":"v22.11.0","primary_framework":"%s"}',
    run, thread_id, counter, platforms[counter % 5 + 1], frameworks[counter % 8 + 1])
end

function request()
  counter = counter + 1
  local ip = string.format("10.%d.%d.%d", thread_id, math.floor(counter / 250) % 250, counter % 250 + 1)
  local ts = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local headers = { ["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip }
  local body
  if door == "voicemode" then
    headers["User-Agent"] = "VoiceMode/7.0.1"
    body = voicemode_body(ts)
  elseif door == "domscribe" then
    body = domscribe_body()
  else
    headers["Authorization"] = "Bearer " .. key
    body = native_body(ts)
  end
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local sent, ok_all, bad_all = 0, 0, 0
  for _, t in ipairs(threads) do
    sent = sent + t:get("counter")
    ok_all = ok_all + t:get("ok")
    bad_all = bad_all + t:get("bad")
  end
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"sent":%d,"ok_2xx":%d,"non_2xx":%d,"socket_errors":%d,'
      .. '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f}\n',
    summary.requests, summary.duration, sent, ok_all, bad_all, errors,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
