// The on-sale spike: fans arriving at a ramping rate before and after the sale opens, until it
// sells out, then a cool-down. Two kinds of arrivals share each stage's request rate:
//   readers  — a fan's page refreshing availability (most of the traffic);
//   buyers   — the whole journey: availability → reserve → pay → poll the order with backoff.
// Sold-out, not-enough-left and too-early answers are expected outcomes, not errors; 429/503
// are honoured (Retry-After) and retried a bounded number of times.
//
//   k6 run --summary-export=summary.json loadtest/spike.js          (scripts/loadtest runs it)
//
// Environment (all optional):
//   READ_URL, BUY_URL, EVENT          where the functions are (default: scripts/dev's ports)
//   STAGES     "DURATION:RPS,..."     total requests/s per stage, ramped linearly
//                                     (default 10s:1000,10s:10000,20s:50000,20s:1000)
//   START_RPS  rate at the start      (default 1000)
//   BUYER_SHARE                       share of the requests made by buyers (default 0.2)
//   REQS_PER_JOURNEY                  requests a buyer journey makes on average (default 5)
//   ABANDON, DECLINE                  share of buyers who never pay / whose card is declined once
//   SLOW_PAY, LOST_PAY                share of buyers whose provider approves slowly / takes the
//                                     money and loses the answer once (the nemesis run; default 0)
//   OPENS_AT_MS, COOLDOWN_AT_MS       phase boundaries (epoch ms) for the per-phase figures
//   P95_AVAILABILITY_MS, P95_RESERVE_MS, P95_PAY_MS, P95_STATUS_MS, MAX_ERROR_RATE
//   PRE_VUS, MAX_VUS                  k6 virtual users held ready / at most
import http from "k6/http";
import { check, sleep } from "k6";
import { Counter, Rate, Trend } from "k6/metrics";

const env = (k, d) => (__ENV[k] === undefined || __ENV[k] === "" ? d : __ENV[k]);
const READ = env("READ_URL", "http://127.0.0.1:8081");
const BUY = env("BUY_URL", "http://127.0.0.1:8082");
const EVENT = env("EVENT", "frequency-2027");
const BUYER_SHARE = Number(env("BUYER_SHARE", "0.2"));
const REQS_PER_JOURNEY = Number(env("REQS_PER_JOURNEY", "5"));
const ABANDON = Number(env("ABANDON", "0.02"));
const DECLINE = Number(env("DECLINE", "0.02"));
const SLOW_PAY = Number(env("SLOW_PAY", "0"));
const LOST_PAY = Number(env("LOST_PAY", "0"));
const OPENS_AT_MS = Number(env("OPENS_AT_MS", "0"));
const COOLDOWN_AT_MS = Number(env("COOLDOWN_AT_MS", "0"));
const MAX_VUS = Number(env("MAX_VUS", "2000"));
const PRE_VUS = Number(env("PRE_VUS", "200"));

function parseStages(spec) {
  return spec.split(",").map((s) => {
    const [duration, rps] = s.split(":");
    return { duration, target: Number(rps) };
  });
}
const STAGES = parseStages(env("STAGES", "10s:1000,10s:10000,20s:50000,20s:1000"));
const START_RPS = Number(env("START_RPS", "1000"));

// Readers make one request per arrival; buyers about REQS_PER_JOURNEY.
const readers = (rps) => Math.max(1, Math.round(rps * (1 - BUYER_SHARE)));
const buyers = (rps) => Math.max(1, Math.round((rps * BUYER_SHARE) / REQS_PER_JOURNEY));
const ms = (k, d) => Number(env(k, d));

export const options = {
  discardResponseBodies: false,
  summaryTrendStats: ["avg", "min", "med", "p(95)", "p(99)", "max"],
  scenarios: {
    readers: {
      executor: "ramping-arrival-rate",
      exec: "reader",
      startRate: readers(START_RPS),
      timeUnit: "1s",
      stages: STAGES.map((s) => ({ duration: s.duration, target: readers(s.target) })),
      preAllocatedVUs: Math.ceil(PRE_VUS / 2),
      maxVUs: Math.ceil(MAX_VUS / 4),
    },
    buyers: {
      executor: "ramping-arrival-rate",
      exec: "buyer",
      startRate: buyers(START_RPS),
      timeUnit: "1s",
      stages: STAGES.map((s) => ({ duration: s.duration, target: buyers(s.target) })),
      preAllocatedVUs: Math.ceil(PRE_VUS / 2),
      maxVUs: Math.ceil((MAX_VUS * 3) / 4),
    },
  },
  thresholds: {
    unexpected_errors: [`rate<${env("MAX_ERROR_RATE", "0.01")}`],
    "http_req_duration{step:availability}": [`p(95)<${ms("P95_AVAILABILITY_MS", "500")}`],
    "http_req_duration{step:reserve}": [`p(95)<${ms("P95_RESERVE_MS", "1000")}`],
    "http_req_duration{step:pay}": [`p(95)<${ms("P95_PAY_MS", "1000")}`],
    "http_req_duration{step:status}": [`p(95)<${ms("P95_STATUS_MS", "500")}`],
    // Per-phase figures for the report (always true: they are here to be summarised).
    "http_req_duration{phase:before_open}": ["max>=0"],
    "http_req_duration{phase:spike}": ["max>=0"],
    "http_req_duration{phase:cooldown}": ["max>=0"],
    "http_reqs{phase:before_open}": ["count>=0"],
    "http_reqs{phase:spike}": ["count>=0"],
    "http_reqs{phase:cooldown}": ["count>=0"],
    "http_req_duration{step:reserve,phase:spike}": ["max>=0"],
    "http_req_duration{step:availability,phase:spike}": ["max>=0"],
  },
};

const unexpected = new Rate("unexpected_errors");
const outcomes = {
  reserved: new Counter("fans_reserved"),
  paid: new Counter("orders_paid"),
  confirmed: new Counter("orders_confirmed"),
  rejected: new Counter("orders_rejected"),
  soldOut: new Counter("answers_sold_out"),
  tooEarly: new Counter("answers_too_early"),
  busy: new Counter("answers_busy"),
  declined: new Counter("payments_declined"),
  abandoned: new Counter("holds_abandoned"),
  expired: new Counter("holds_expired_before_pay"),
  unconfirmed: new Counter("orders_not_confirmed_in_time"),
};
const toConfirmed = new Trend("pay_to_confirmed", true);

function phase() {
  const now = Date.now();
  if (OPENS_AT_MS && now < OPENS_AT_MS) return "before_open";
  if (COOLDOWN_AT_MS && now >= COOLDOWN_AT_MS) return "cooldown";
  return OPENS_AT_MS ? "spike" : "run";
}

function tags(step, name) {
  return { step, phase: phase(), name: name || step };
}

// A request whose only acceptable answers are `ok`; anything else counts as unexpected.
function expect(res, ok, what) {
  const good = ok.includes(res.status);
  unexpected.add(!good);
  if (!good) check(res, { [`${what}: ${res.status}`]: () => false });
  return good;
}

function retryAfter(res, fallback) {
  const v = Number(res.headers["Retry-After"]);
  return Math.min(Number.isFinite(v) && v > 0 ? v : fallback, 5);
}

function availability() {
  const res = http.get(`${READ}/v1/events/${EVENT}/availability`, {
    tags: tags("availability"),
    responseCallback: http.expectedStatuses(200),
  });
  return expect(res, [200], "availability") ? res.json() : null;
}

export function reader() {
  availability();
}

function uuid() {
  return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, (c) => {
    const r = (Math.random() * 16) | 0;
    return (c === "x" ? r : (r & 0x3) | 0x8).toString(16);
  });
}

const JSON_HEADERS = { "Content-Type": "application/json" };

export function buyer() {
  const view = availability();
  if (!view) return;
  const open = view.ticket_types.filter((t) => t.available > 0);
  if (view.sale_open && open.length === 0) {
    outcomes.soldOut.add(1);
    return;
  }
  const tier = (open.length ? open : view.ticket_types)[Math.floor(Math.random() * (open.length || view.ticket_types.length))];
  const quantity = Math.random() < 0.7 ? 1 : 2;
  const key = uuid(); // one Idempotency-Key per purchase attempt, reused on every retry
  const body = JSON.stringify({ ticket_type: tier.id, quantity, email: `fan-${key}@k6.example` });
  let res;
  for (let attempt = 0; attempt < 4; attempt++) {
    res = http.post(`${BUY}/v1/events/${EVENT}/orders`, body, {
      headers: { ...JSON_HEADERS, "Idempotency-Key": key },
      tags: tags("reserve"),
      responseCallback: http.expectedStatuses(202, 409, 425, 429),
    });
    if (res.status === 425) {
      outcomes.tooEarly.add(1);
      sleep(retryAfter(res, 1));
      continue;
    }
    if (res.status === 429 || res.status === 503 || res.status === 0) {
      outcomes.busy.add(1);
      sleep(retryAfter(res, 1));
      continue;
    }
    break;
  }
  if (res.status === 409) {
    outcomes.soldOut.add(1);
    unexpected.add(false);
    return;
  }
  if (res.status === 425 || res.status === 429) {
    unexpected.add(false); // still too early / still limited after bounded retries: a clear answer
    return;
  }
  if (!expect(res, [202], "reserve")) return;
  outcomes.reserved.add(1);
  const id = res.json("order_id");
  if (Math.random() < ABANDON) {
    outcomes.abandoned.add(1);
    return;
  }
  sleep(Math.random() * 0.5); // the fan types in their card
  const card = Math.random();
  const approve = card < SLOW_PAY ? "tok_approve_slow" : card < SLOW_PAY + LOST_PAY ? "tok_approve_lost" : "tok_approve";
  const tokens = Math.random() < DECLINE ? ["tok_decline", approve] : [approve];
  let pay;
  for (const token of tokens) {
    pay = http.post(`${BUY}/v1/orders/${id}/payment`, JSON.stringify({ payment_token: token }), {
      headers: JSON_HEADERS,
      tags: tags("pay"),
      responseCallback: http.expectedStatuses(202, 402, 409, 410),
    });
    if (pay.status === 402) outcomes.declined.add(1);
    if (pay.status === 503 || pay.status === 0) {
      sleep(retryAfter(pay, 1));
      pay = http.post(`${BUY}/v1/orders/${id}/payment`, JSON.stringify({ payment_token: token }), {
        headers: JSON_HEADERS,
        tags: tags("pay"),
        responseCallback: http.expectedStatuses(202, 402, 409, 410),
      });
    }
  }
  if (pay.status === 410) {
    outcomes.expired.add(1);
    unexpected.add(false);
    return;
  }
  if (!expect(pay, [202], "pay")) return;
  outcomes.paid.add(1);
  const paidAt = Date.now();
  let wait = 0.2;
  const deadline = paidAt + Number(env("CONFIRM_WITHIN_MS", "30000"));
  while (Date.now() < deadline) {
    sleep(wait);
    wait = Math.min(wait * 1.5, 2);
    const st = http.get(`${READ}/v1/orders/${id}`, {
      tags: tags("status", "order status"),
      responseCallback: http.expectedStatuses(200),
    });
    if (!expect(st, [200], "status")) return;
    const status = st.json("status");
    if (status === "confirmed") {
      outcomes.confirmed.add(1);
      // scripts/loadtest checks each one against the books after the drain.
      console.log(`confirmed ${id}`);
      toConfirmed.add(Date.now() - paidAt);
      check(st, { "confirmed order has its ticket codes": (r) => r.json("tickets").length === quantity });
      return;
    }
    if (status === "rejected") {
      outcomes.rejected.add(1);
      return;
    }
  }
  outcomes.unconfirmed.add(1);
}
