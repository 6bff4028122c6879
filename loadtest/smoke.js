// A short fan journey (availability → reserve → pay → status) for a few seconds: the smoke
// test that the local stack and the k6 → Prometheus remote write work. The spike lives in
// loadtest/spike.js (issue "Load tests").
//   K6_PROMETHEUS_RW_SERVER_URL=http://127.0.0.1:9090/api/v1/write \
//     k6 run -o experimental-prometheus-rw loadtest/smoke.js
import http from "k6/http";
import { check, sleep } from "k6";

const READ = __ENV.READ_URL || "http://127.0.0.1:8081";
const BUY = __ENV.BUY_URL || "http://127.0.0.1:8082";
const EVENT = __ENV.EVENT || "frequency-2027";

export const options = {
  scenarios: { fans: { executor: "constant-arrival-rate", rate: 20, timeUnit: "1s", duration: "20s", preAllocatedVUs: 20, maxVUs: 50 } },
  thresholds: { "http_req_failed{expected:false}": ["rate<0.01"], checks: ["rate>0.99"] },
};

const json = { headers: { "Content-Type": "application/json" } };

export default function () {
  const avail = http.get(`${READ}/v1/events/${EVENT}/availability`);
  check(avail, { "availability 200": (r) => r.status === 200 });
  const key = `${__VU}-${__ITER}-${Date.now()}-${Math.random()}`;
  const res = http.post(
    `${BUY}/v1/events/${EVENT}/orders`,
    JSON.stringify({ ticket_type: "vip-3-day", quantity: 1, email: `k6-${key}@example.at` }),
    { headers: { "Content-Type": "application/json", "Idempotency-Key": `k6-${key}` },
      responseCallback: http.expectedStatuses(202, 409, 425) },
  );
  check(res, { "reserve answered clearly": (r) => [202, 409, 425].includes(r.status) });
  if (res.status !== 202) return;
  const id = res.json("order_id");
  const pay = http.post(`${BUY}/v1/orders/${id}/payment`, JSON.stringify({ payment_token: "tok_approve" }), json);
  check(pay, { "payment accepted": (r) => r.status === 202 });
  sleep(0.5);
  check(http.get(`${READ}/v1/orders/${id}`), { "status readable": (r) => r.status === 200 });
}
