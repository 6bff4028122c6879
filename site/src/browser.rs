//! The browser driver (wasm32 only): hydrates the prerendered page, runs the clock and the
//! availability refresh, and carries out the journey's commands with `fetch`, feeding every
//! answer back into the state machine.

use sycamore::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{Headers, Request, RequestCache, RequestInit, Response};

use crate::api::{Answer, Catalog};
use crate::journey::{Command, FormError, Journey, plausible_email};
use crate::view::{Action, Dispatch, page, step_index};

/// A request that has not answered after this long counts as a network failure.
const REQUEST_TIMEOUT_MS: u32 = 15_000;

fn window() -> web_sys::Window {
    web_sys::window().expect("a browser window")
}

fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

async fn sleep(ms: i64) {
    let ms = ms.clamp(0, i64::from(i32::MAX)) as i32;
    let p = js_sys::Promise::new(&mut |resolve, _| {
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = JsFuture::from(p).await;
}

/// A fresh Idempotency-Key (a v4 UUID; loopback and HTTPS are secure contexts).
fn new_key() -> String {
    window()
        .crypto()
        .ok()
        .map(|c| c.random_uuid())
        .unwrap_or_else(|| {
            format!(
                "{:x}-{:x}",
                now_ms(),
                (js_sys::Math::random() * 1e16) as u64
            )
        })
}

async fn fetch(method: &str, url: &str, body: Option<String>, key: Option<&str>) -> Answer {
    fetch_admitted(method, url, body, key, None).await
}

/// A request that may carry the waiting room's admission token.
async fn fetch_admitted(
    method: &str,
    url: &str,
    body: Option<String>,
    key: Option<&str>,
    admission: Option<&str>,
) -> Answer {
    match try_fetch(method, url, body, key, admission).await {
        Ok(a) => a,
        Err(_) => Answer::Network,
    }
}

async fn try_fetch(
    method: &str,
    url: &str,
    body: Option<String>,
    key: Option<&str>,
    admission: Option<&str>,
) -> Result<Answer, JsValue> {
    let init = RequestInit::new();
    init.set_method(method);
    // The page paces its own reads, so the browser keeps no copy: its copy would be handed out
    // again after a second (`stale-while-revalidate`, meant for the edge), a waiting fan
    // learning its turn a poll late; and a copy revalidated by a 304 keeps its old
    // `server_time`, the clock the countdowns run on. The edge still answers from its cache.
    init.set_cache(RequestCache::NoStore);
    let headers = Headers::new()?;
    headers.set("accept", "application/json, application/problem+json")?;
    if let Some(b) = body {
        headers.set("content-type", "application/json")?;
        init.set_body(&JsValue::from_str(&b));
    }
    if let Some(k) = key {
        headers.set("idempotency-key", k)?;
    }
    if let Some(t) = admission {
        headers.set("admission-token", t)?;
    }
    init.set_headers(&headers);
    init.set_signal(Some(&web_sys::AbortSignal::timeout_with_u32(
        REQUEST_TIMEOUT_MS,
    )));
    let req = Request::new_with_str_and_init(url, &init)?;
    let resp: Response = JsFuture::from(window().fetch_with_request(&req))
        .await?
        .dyn_into()?;
    let retry_after = resp
        .headers()
        .get("retry-after")
        .ok()
        .flatten()
        .and_then(|s| s.trim().parse().ok());
    let status = resp.status();
    let body = JsFuture::from(resp.text()?)
        .await?
        .as_string()
        .unwrap_or_default();
    Ok(Answer::Http {
        status,
        retry_after,
        body,
    })
}

/// Carries out a command and every command its answer leads to (retries, polls).
fn run(journey: Signal<Journey>, cmd: Option<Command>) {
    let Some(first) = cmd else { return };
    let event = journey.with_untracked(|j| j.catalog.event.clone());
    spawn_local(async move {
        let mut next = Some(first);
        // The journey bounds retries and polls itself; this only guards against a bug looping.
        for _ in 0..500 {
            let Some(cmd) = next.take() else { break };
            next = match cmd {
                Command::Reserve {
                    key,
                    request,
                    delay_ms,
                } => {
                    sleep(delay_ms).await;
                    let body = serde_json::to_string(&request).unwrap_or_default();
                    let token = journey.with_untracked(|j| j.admission_token().map(str::to_owned));
                    let sent = now_ms();
                    let a = fetch_admitted(
                        "POST",
                        &format!("/v1/events/{event}/orders"),
                        Some(body),
                        Some(&key),
                        token.as_deref(),
                    )
                    .await;
                    journey.update(|j| j.on_reserve(&key, &a, sent, now_ms()))
                }
                Command::Join { email, delay_ms } => {
                    sleep(delay_ms).await;
                    let body = serde_json::json!({ "email": email }).to_string();
                    let a = fetch(
                        "POST",
                        &format!("/v1/events/{event}/room"),
                        Some(body),
                        None,
                    )
                    .await;
                    journey.update(|j| j.on_join(&email, &a, now_ms()))
                }
                Command::Pay {
                    order_id,
                    token,
                    delay_ms,
                } => {
                    sleep(delay_ms).await;
                    let body = serde_json::json!({ "payment_token": token }).to_string();
                    let a = fetch(
                        "POST",
                        &format!("/v1/orders/{order_id}/payment"),
                        Some(body),
                        None,
                    )
                    .await;
                    journey.update(|j| j.on_pay(&order_id, &a, now_ms()))
                }
                Command::Poll { order_id, delay_ms } => {
                    sleep(delay_ms).await;
                    let sent = now_ms();
                    let a = fetch("GET", &format!("/v1/orders/{order_id}"), None, None).await;
                    journey.update(|j| j.on_poll(&order_id, &a, sent, now_ms()))
                }
                Command::Cancel { order_id } => {
                    // Best effort: a hold that is not released expires by itself.
                    let _ = fetch(
                        "POST",
                        &format!("/v1/orders/{order_id}/cancel"),
                        Some("{}".into()),
                        None,
                    )
                    .await;
                    None
                }
            };
        }
    });
}

fn handle(journey: Signal<Journey>, action: Action) {
    let cmd = match action {
        Action::ChooseTier(id) => {
            journey.update(|j| j.choose_tier(&id));
            None
        }
        Action::Quantity(n) => {
            journey.update(|j| {
                j.form.quantity = n.clamp(1, j.max_quantity());
                if j.form_error == Some(FormError::Quantity) {
                    j.form_error = None;
                }
            });
            None
        }
        Action::Email(e) => {
            journey.update(|j| {
                if j.form_error == Some(FormError::Email) && plausible_email(&e) {
                    j.form_error = None;
                }
                j.form.email = e;
            });
            None
        }
        Action::Submit => journey.update(|j| j.submit(now_ms(), new_key)),
        Action::Pay(token) => journey.update(|j| j.pay(token)),
        Action::Cancel => journey.update(Journey::cancel),
        Action::PollAgain => journey.update(Journey::poll_again),
        Action::StartOver => {
            journey.update(Journey::start_over);
            None
        }
    };
    run(journey, cmd);
}

fn catalog() -> Option<Catalog> {
    let text = window()
        .document()?
        .get_element_by_id("catalog")?
        .text_content()?;
    serde_json::from_str(&text).ok()
}

/// Hydrates the prerendered `#app` and starts the page's loops.
pub fn start() {
    let Some(catalog) = catalog() else { return };
    let Some(root) = window().document().and_then(|d| d.get_element_by_id("app")) else {
        return;
    };
    sycamore::hydrate_to(
        move || {
            let journey = create_signal(Journey::new(catalog));
            let now = create_signal(0_i64);
            let view = page(journey, now, Dispatch::new(move |a| handle(journey, a)));
            start_loops(journey, now);
            view
        },
        &root,
    );
}

fn start_loops(journey: Signal<Journey>, now: Signal<i64>) {
    // The clock: countdowns and hold expiry, every second (on the second, by server time).
    spawn_local(async move {
        loop {
            let t = now_ms();
            now.set(t);
            let changed = journey.with_untracked(|j| {
                let mut next = j.clone();
                next.tick(t);
                (next != *j).then_some(next)
            });
            if let Some(next) = changed {
                journey.set(next);
            }
            let offset = journey.with_untracked(|j| j.offset.unwrap_or(0));
            sleep(1_000 - (t + offset).rem_euclid(1_000) + 5).await;
        }
    });
    // Live availability: right at the opening, every 5 s on sale, slower while unreachable.
    let event = journey.with_untracked(|j| j.catalog.event.clone());
    spawn_local(async move {
        let url = format!("/v1/events/{event}/availability");
        loop {
            let sent = now_ms();
            let a = fetch("GET", &url, None, None).await;
            let turn = journey.update(|j| j.on_availability(&a, sent, now_ms()));
            run(journey, turn);
            // A little jitter, so thousands of open pages do not ask in lockstep.
            let jitter = (js_sys::Math::random() * 400.0) as i64;
            sleep(journey.with_untracked(|j| j.availability_delay(now_ms())) + jitter).await;
        }
    });
    // Focus follows the journey: each new step's heading takes focus (screen readers read it).
    let step = create_selector(move || journey.with(|j| step_index(&j.stage)));
    let first = std::cell::Cell::new(true);
    create_effect(move || {
        step.track();
        if first.replace(false) {
            return;
        }
        spawn_local(async {
            sleep(0).await;
            if let Some(h) = window()
                .document()
                .and_then(|d| d.get_element_by_id("step-h"))
            {
                let _ = h.unchecked_into::<web_sys::HtmlElement>().focus();
            }
        });
    });
}
