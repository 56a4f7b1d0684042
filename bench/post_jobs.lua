-- wrk script: POST a new job per request ({sessionId, taskId, model: demo}) with a taskId
-- unique across threads and runs (WP_PREFIX), and print one JSON summary line (microsecond
-- latencies turned into milliseconds).
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  prefix = os.getenv("WP_PREFIX") or "t"
  token = os.getenv("WP_TOKEN") or ""
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"sessionId":"bench-%d","taskId":"%s-%d-%d","model":"demo","attempt":1}',
    counter % 1000, prefix, id, counter)
  return wrk.format("POST", "/poll-video", nil, body)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,' ..
    '"max_ms":%.3f,"errors":%d,"non2xx":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect + e.read + e.write + e.timeout, e.status))
end
