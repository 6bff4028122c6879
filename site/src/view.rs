//! The page. Everything it shows is derived from the [`Journey`] signal; user input becomes an
//! [`Action`] for the driver. The same code renders to a string at build time (native target)
//! and hydrates in the browser, so both must start from the same state ([`Journey::new`]).

use std::rc::Rc;

use sycamore::prelude::*;
use sycamore::web::events::{Event, SubmitEvent};
use wasm_bindgen::JsCast;

use crate::journey::{FormError, Journey, Notice, Stage, TierState, Transient};

/// What the fan did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    ChooseTier(String),
    Quantity(u32),
    Email(String),
    Submit,
    Pay(&'static str),
    Cancel,
    PollAgain,
    StartOver,
}

/// Where actions go (the browser driver; nowhere when prerendering).
#[derive(Clone)]
pub struct Dispatch(Rc<dyn Fn(Action)>);

impl Dispatch {
    /// Sends every action to `f`.
    pub fn new(f: impl Fn(Action) + 'static) -> Self {
        Self(Rc::new(f))
    }
    fn send(&self, a: Action) {
        (self.0)(a);
    }
}

/// The simulated payment tokens the demo offers (README "Simulated payments").
pub const TEST_CARDS: [(&str, &str, &str); 3] = [
    ("tok_approve", "Test card: approved", "pays"),
    ("tok_decline", "Test card: declined", "the bank says no"),
    (
        "tok_unavailable",
        "Test: provider outage",
        "the payment provider is down",
    ),
];

/// `€349`, `€1,249.50`.
pub fn euros(cents: i64) -> String {
    let whole = cents / 100;
    let mut digits = whole.abs().to_string();
    let mut i = digits.len();
    while i > 3 {
        i -= 3;
        digits.insert(i, ',');
    }
    let sign = if cents < 0 { "-" } else { "" };
    match cents.abs() % 100 {
        0 => format!("{sign}€{digits}"),
        c => format!("{sign}€{digits}.{c:02}"),
    }
}

/// `09:59`, `1:02:03`, `3 d 04:05:06` (rounded up to the second, never negative).
pub fn clock(ms: i64) -> String {
    let s = (ms.max(0) + 999) / 1_000;
    let (d, h, m, s) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    match (d, h) {
        (0, 0) => format!("{m:02}:{s:02}"),
        (0, h) => format!("{h}:{m:02}:{s:02}"),
        (d, h) => format!("{d} d {h:02}:{m:02}:{s:02}"),
    }
}

/// What the tier's badge says.
pub fn badge(state: TierState, available: i64) -> String {
    match state {
        TierState::Unknown => "Checking…".into(),
        TierState::NotOnSaleYet => "Opens soon".into(),
        TierState::OnSale => format!("{available} left"),
        TierState::FewLeft => format!("Only {available} left"),
        TierState::SoldOut => "Sold out".into(),
        TierState::Paused => "Paused, back in a moment".into(),
    }
}

/// The buy button's label.
pub fn buy_label(j: &Journey, now: i64) -> String {
    let i = j.tier_index(&j.form.tier);
    if let Stage::Reserving { retry } | Stage::Queued { retry } = &j.stage {
        let doing = if matches!(j.stage, Stage::Queued { .. }) {
            "In the queue…"
        } else {
            "Reserving…"
        };
        return match retry {
            Some(r) => format!("Trying again in {} s…", ((r.at - now).max(0) + 999) / 1_000),
            None => doing.into(),
        };
    }
    if j.sale_opens_at.is_none() {
        return "Checking availability…".into();
    }
    if let Some(ms) = j.opens_in(now).filter(|ms| *ms > 0) {
        if j.room.is_some() {
            return format!("Join the queue · the sale opens in {}", clock(ms));
        }
        return format!("Sale opens in {}", clock(ms));
    }
    if let Some(t) = j.blocked_until.filter(|t| *t > now) {
        return format!("Try again in {} s", (t - now + 999) / 1_000);
    }
    match i {
        Some(i) if j.tier_state(i) == TierState::SoldOut => "Sold out".into(),
        Some(i) if j.room.is_some() && j.admission_token().is_none() => format!(
            "Join the queue for {} × {} · {}",
            j.form.quantity,
            j.catalog.tiers[i].name,
            euros(j.price(i) * i64::from(j.form.quantity))
        ),
        Some(i) => format!(
            "Reserve {} × {} · {}",
            j.form.quantity,
            j.catalog.tiers[i].name,
            euros(j.price(i) * i64::from(j.form.quantity))
        ),
        None => "Choose a pass".into(),
    }
}

/// A line about a retry in progress (shown in the polite status region).
pub fn retry_line(j: &Journey, now: i64) -> String {
    let (retry, what) = match &j.stage {
        Stage::Reserving { retry } => (retry, "Reserving"),
        Stage::Queued { retry } => (retry, "Joining the queue"),
        Stage::Paying { retry, .. } => (retry, "Paying"),
        _ => return String::new(),
    };
    let Some(r) = retry else {
        return String::new();
    };
    let why = match r.why {
        Transient::RateLimited => "The shop asked us to slow down",
        Transient::Busy => "The shop is busy",
        Transient::Network => "No connection",
    };
    format!(
        "{why}. {what} again in {} s (try {} of {}); you will not be charged twice.",
        ((r.at - now).max(0) + 999) / 1_000,
        r.attempt + 2,
        crate::journey::MAX_RETRIES + 1
    )
}

/// `about 3 min`, `about 40 s`, `under a minute`.
pub fn wait(secs: u64) -> String {
    match secs {
        0..=59 => "under a minute".into(),
        60..=5_399 => format!("about {} min", secs.div_ceil(60)),
        _ => format!("about {} h {} min", secs / 3_600, secs % 3_600 / 60),
    }
}

/// What the waiting room tells the fan while it waits (empty outside the room).
pub fn queue_lines(j: &Journey) -> Vec<String> {
    let (Stage::Queued { .. }, Some(q)) = (&j.stage, &j.queue) else {
        return vec![];
    };
    let mut lines = vec![];
    if let (0, Some(about)) = (q.place, q.place_about) {
        lines.push(format!("You're in the queue, at about place {about}, drawn at random among everyone who joined before the opening."));
        lines.push(match q.ahead {
            0 => "You're about next.".to_owned(),
            n => format!("About {n} fans are ahead of you."),
        });
    } else if q.place == 0 {
        lines.push("You're in the queue. At the opening everyone who joined before it is put in one fair, random order: your place shows here then.".into());
    } else {
        lines.push(format!("Your place in the queue: {}.", q.place));
        let ahead = match q.ahead {
            0 => "You're next.".to_owned(),
            1 => "1 fan is ahead of you.".to_owned(),
            n => format!("{n} fans are ahead of you."),
        };
        lines.push(
            match (q.ahead, j.room.as_ref().map_or(0, |r| r.rate_per_sec)) {
                (0, _) | (_, 0) => ahead,
                (n, rate) => format!(
                    "{ahead} At the current pace that is {}.",
                    wait((n + 1).div_ceil(u64::from(rate)))
                ),
            },
        );
    }
    let left: i64 = j.live.iter().flatten().map(|l| l.available).sum();
    if j.live.iter().any(Option::is_some) {
        lines.push(format!("{left} passes left right now."));
    }
    if j.room.as_ref().is_some_and(|r| r.paused) {
        lines.push("Admission is paused for a moment; your place is kept.".into());
    }
    lines.push(
        "Keep this page open: it moves on to your reservation by itself when it is your turn."
            .into(),
    );
    lines
}

/// The header's sale status line.
pub fn sale_line(j: &Journey, now: i64) -> (String, String) {
    match j.opens_in(now) {
        None if j.availability_down => ("Can't reach the shop".into(), "retrying…".into()),
        None => ("VIP on-sale".into(), "live status loading…".into()),
        Some(ms) if ms > 0 => ("Sale opens in".into(), clock(ms)),
        Some(_) if (0..j.catalog.tiers.len()).all(|i| j.tier_state(i) == TierState::SoldOut) => {
            ("Sold out".into(), "every VIP pass is taken".into())
        }
        Some(_) => ("On sale now".into(), "live availability below".into()),
    }
}

/// Which part of the page a stage shows (focus moves when it changes).
pub fn step_index(s: &Stage) -> u8 {
    step_of(s) as u8
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Choose,
    Held,
    Confirming,
    Confirmed,
}

fn step_of(s: &Stage) -> Step {
    match s {
        Stage::Choosing | Stage::Queued { .. } | Stage::Reserving { .. } => Step::Choose,
        Stage::Held(_) | Stage::Paying { .. } => Step::Held,
        Stage::Confirming { .. } => Step::Confirming,
        Stage::Confirmed { .. } => Step::Confirmed,
    }
}

/// Shared by every part of the page.
#[derive(Clone)]
struct Ctx {
    journey: Signal<Journey>,
    now: Signal<i64>,
    dispatch: Dispatch,
}

fn value_of(e: &Event) -> String {
    e.target()
        .and_then(|t| {
            t.dyn_ref::<web_sys::HtmlInputElement>()
                .map(web_sys::HtmlInputElement::value)
                .or_else(|| {
                    t.dyn_ref::<web_sys::HtmlSelectElement>()
                        .map(web_sys::HtmlSelectElement::value)
                })
        })
        .unwrap_or_default()
}

/// The whole page body. `now` ticks every second in the browser.
pub fn page(journey: Signal<Journey>, now: Signal<i64>, dispatch: Dispatch) -> View {
    let ctx = Ctx {
        journey,
        now,
        dispatch,
    };
    let (name, venue) =
        journey.with_untracked(|j| (j.catalog.name.clone(), j.catalog.venue.clone()));
    let status = create_memo(move || journey.with(|j| sale_line(j, now.get())));
    let counting =
        create_memo(move || journey.with(|j| j.opens_in(now.get()).is_some_and(|ms| ms > 0)));
    let feed = create_memo(move || {
        journey.with(|j| {
            if j.availability_down {
                "Live availability is unreachable right now; showing the last numbers and retrying."
            } else if j.stale {
                "Live numbers may be a few seconds behind."
            } else {
                ""
            }
        })
    });
    let step = create_selector(move || journey.with(|j| step_of(&j.stage)));
    let c = ctx.clone();
    view! {
        a(href="#shop", class="sr-only focus:not-sr-only focus:absolute focus:left-4 focus:top-4 focus:z-10 focus:rounded-lg focus:bg-acid focus:px-4 focus:py-2 focus:font-bold focus:text-night") {
            "Skip to the shop"
        }
        header(class="relative overflow-hidden") {
            div(class="glow", aria-hidden="true")
            div(class="relative mx-auto max-w-5xl px-5 pb-10 pt-8 sm:pt-14") {
                p(class="text-sm font-bold uppercase tracking-[0.3em] text-cyan") { (venue) }
                h1(class="mt-3 text-5xl font-black uppercase leading-[0.9] tracking-tight sm:text-7xl") {
                    span(class="block bg-gradient-to-r from-magenta via-violet to-cyan bg-clip-text text-transparent") { (name) }
                    span(class="mt-2 block text-3xl text-white sm:text-5xl") { "VIP passes" }
                }
                p(class="mt-4 max-w-xl text-lg text-mist") {
                    "Three days by the Traisen river: the VIP entrance, the viewing platform at the Space Stage, the quiet camp and the backstage lounge."
                }
                div(class="mt-7 inline-flex flex-wrap items-baseline gap-x-3 gap-y-1 rounded-2xl border border-white/15 bg-white/5 px-5 py-3 backdrop-blur") {
                    span(class="text-sm font-bold uppercase tracking-widest text-acid") { (status.with(|s| s.0.clone())) }
                    span(class=move || if counting.get() { "font-mono text-3xl font-black tabular-nums" } else { "text-mist" }, role="timer", aria-live="off") {
                        (status.with(|s| s.1.clone()))
                    }
                }
                p(class="mt-2 text-sm text-mist", aria-live="polite") { (feed.get()) }
            }
        }
        main(id="shop", class="mx-auto max-w-5xl px-5 pb-16") {
            (match step.get() {
                Step::Choose => choose(c.clone()),
                Step::Held => held(c.clone()),
                Step::Confirming => confirming(c.clone()),
                Step::Confirmed => confirmed(c.clone()),
            })
        }
        footer(class="border-t border-white/10") {
            div(class="mx-auto max-w-5xl px-5 py-8 text-sm text-mist") {
                p { "A demo shop for the Frequency Festival VIP on-sale. Payments are simulated: no card is charged." }
                p(class="mt-1") { "Times run on the shop's clock, not your device's." }
            }
        }
    }
}

fn notices(ctx: &Ctx) -> View {
    let journey = ctx.journey;
    let now = ctx.now;
    let alert = create_memo(move || {
        journey.with(|j| {
            j.notice
                .as_ref()
                .filter(|n| n.is_error())
                .map(Notice::message)
                .unwrap_or_default()
        })
    });
    let news = create_memo(move || {
        journey.with(|j| {
            let retry = retry_line(j, now.get());
            if retry.is_empty() {
                j.notice
                    .as_ref()
                    .filter(|n| !n.is_error())
                    .map(Notice::message)
                    .unwrap_or_default()
            } else {
                retry
            }
        })
    });
    view! {
        div(role="alert", class=move || if alert.with(String::is_empty) { "" } else { "rounded-xl border border-magenta bg-magenta/15 px-4 py-3 font-semibold text-white" }) {
            (alert.get_clone())
        }
        div(role="status", class=move || if news.with(String::is_empty) { "" } else { "rounded-xl border border-cyan/60 bg-cyan/10 px-4 py-3 text-white" }) {
            (news.get_clone())
        }
    }
}

fn tier_card(ctx: &Ctx, i: usize) -> View {
    let journey = ctx.journey;
    let d = ctx.dispatch.clone();
    let (id, name, description) = journey.with_untracked(|j| {
        let t = &j.catalog.tiers[i];
        (t.id.clone(), t.name.clone(), t.description.clone())
    });
    let state = create_selector(move || journey.with(|j| j.tier_state(i)));
    let left = create_selector(move || journey.with(|j| j.live[i].map_or(0, |l| l.available)));
    let price = create_selector(move || journey.with(|j| j.price(i)));
    let checked = {
        let id = id.clone();
        create_selector(move || journey.with(|j| j.form.tier == id))
    };
    let locked = create_selector(move || journey.with(|j| !matches!(j.stage, Stage::Choosing)));
    // Plain variables: the view macro wraps method calls in closures (dynamic attributes).
    let (input_id, label_for) = (format!("tier-{id}"), format!("tier-{id}"));
    let (desc_id, described_by) = (format!("tier-{id}-desc"), format!("tier-{id}-desc"));
    let value = id.clone();
    view! {
        label(r#for=label_for, class=move || format!(
            "tier relative flex cursor-pointer flex-col gap-3 rounded-3xl border-2 p-5 transition has-[:focus-visible]:ring-4 has-[:focus-visible]:ring-acid {}",
            if state.get() == TierState::SoldOut { "border-white/10 bg-white/[0.03] opacity-70 cursor-not-allowed" }
            else if checked.get() { "border-acid bg-acid/10 shadow-[0_0_40px_-10px] shadow-acid" }
            else { "border-white/15 bg-white/5 hover:border-white/40" }
        )) {
            input(
                id=input_id, r#type="radio", name="tier", value=value, class="sr-only",
                checked=move || checked.get(),
                disabled=move || locked.get() || state.get() == TierState::SoldOut,
                aria-describedby=described_by,
                on:change=move |_| d.send(Action::ChooseTier(id.clone())),
            )
            span(class="flex items-start justify-between gap-4") {
                span(class="text-xl font-black uppercase tracking-tight") { (name) }
                span(class="text-2xl font-black text-acid tabular-nums") { (euros(price.get())) }
            }
            span(id=desc_id, class="text-sm leading-relaxed text-mist") { (description) }
            span(class=move || format!("badge self-start rounded-full px-3 py-1 text-xs font-bold uppercase tracking-wider {}", match state.get() {
                TierState::SoldOut => "bg-white/10 text-mist line-through",
                TierState::FewLeft => "bg-magenta text-white",
                TierState::OnSale => "bg-cyan text-night",
                _ => "bg-white/10 text-white",
            })) {
                (badge(state.get(), left.get()))
            }
        }
    }
}

fn choose(ctx: Ctx) -> View {
    let journey = ctx.journey;
    let now = ctx.now;
    let count = journey.with_untracked(|j| j.catalog.tiers.len());
    let cards: Vec<View> = (0..count).map(|i| tier_card(&ctx, i)).collect();
    let max_q = create_selector(move || journey.with(Journey::max_quantity));
    let qty = create_selector(move || journey.with(|j| j.form.quantity));
    let error = create_selector(move || journey.with(|j| j.form_error));
    let can = create_selector(move || journey.with(|j| j.can_submit(now.get())));
    // Queued too: the reservation that goes out at the fan's turn is the one it joined with.
    let busy = create_selector(move || {
        journey.with(|j| matches!(j.stage, Stage::Reserving { .. } | Stage::Queued { .. }))
    });
    let label = create_memo(move || journey.with(|j| buy_label(j, now.get())));
    let email0 = journey.with_untracked(|j| j.form.email.clone());
    let (queue, notes) = (queue_panel(&ctx), notices(&ctx));
    let (dq, de, ds) = (
        ctx.dispatch.clone(),
        ctx.dispatch.clone(),
        ctx.dispatch.clone(),
    );
    view! {
        form(class="space-y-8", novalidate=true, aria-labelledby="step-h", on:submit=move |e: SubmitEvent| {
            e.prevent_default();
            ds.send(Action::Submit);
        }) {
            fieldset(class="space-y-4") {
                legend(class="contents") {
                    h2(id="step-h", tabindex="-1", class="text-2xl font-black uppercase tracking-tight outline-none sm:text-3xl") { "Choose your pass" }
                }
                div(class="grid gap-4 md:grid-cols-3") { (cards) }
                p(class=move || if error.get() == Some(FormError::Tier) { "text-sm font-semibold text-magenta" } else { "hidden" }) { "Choose a pass." }
            }
            div(class="grid gap-5 sm:grid-cols-[8rem_1fr]") {
                div {
                    label(r#for="quantity", class="block text-sm font-bold uppercase tracking-wider") { "Passes" }
                    select(id="quantity", name="quantity", class="field mt-2",
                        aria-invalid=move || (error.get() == Some(FormError::Quantity)).to_string(),
                        aria-describedby="quantity-hint",
                        disabled=move || busy.get(),
                        on:change=move |e: Event| dq.send(Action::Quantity(value_of(&e).parse().unwrap_or(1)))) {
                        (move || (1..=max_q.get()).map(|n| view! {
                            option(value=n.to_string(), selected=move || qty.get() == n) { (n) }
                        }).collect::<Vec<_>>())
                    }
                    p(id="quantity-hint", class=move || if error.get() == Some(FormError::Quantity) { "mt-1 text-sm font-semibold text-magenta" } else { "mt-1 text-sm text-mist" }) {
                        "Up to " (max_q.get()) " per fan"
                    }
                }
                div {
                    label(r#for="email", class="block text-sm font-bold uppercase tracking-wider") { "E-mail for your tickets" }
                    input(id="email", name="email", r#type="email", autocomplete="email", inputmode="email", required=true,
                        placeholder="you@example.at", class="field mt-2", initial_value=email0,
                        aria-invalid=move || (error.get() == Some(FormError::Email)).to_string(),
                        aria-describedby="email-hint",
                        disabled=move || busy.get(),
                        on:input=move |e: Event| de.send(Action::Email(value_of(&e))))
                    p(id="email-hint", class=move || if error.get() == Some(FormError::Email) { "mt-1 text-sm font-semibold text-magenta" } else { "mt-1 text-sm text-mist" }) {
                        (if error.get() == Some(FormError::Email) { "Enter a valid e-mail address, like you@example.at." } else { "Your ticket codes go here. One address, one limit per tier." })
                    }
                }
            }
            (queue)
            (notes)
            button(r#type="submit", class="btn-primary w-full sm:w-auto", disabled=move || !can.get(), aria-busy=move || busy.get().to_string()) {
                (label.get_clone())
            }
        }
    }
}

/// The waiting room's panel, while the fan waits (a polite live region: place and wait change).
fn queue_panel(ctx: &Ctx) -> View {
    let journey = ctx.journey;
    let lines = create_memo(move || journey.with(queue_lines));
    view! {
        div(id="queue", role="status", aria-live="polite", class=move || if lines.with(Vec::is_empty) { "hidden" } else { "space-y-1 rounded-2xl border border-violet/60 bg-violet/15 px-5 py-4 text-white" }) {
            (move || lines.get_clone().into_iter().enumerate().map(|(i, l)| view! {
                p(class=if i == 0 { "text-lg font-bold" } else { "text-mist" }) { (l) }
            }).collect::<Vec<_>>())
        }
    }
}

fn summary(j: &Journey, h: &crate::journey::Hold) -> String {
    let name = j
        .tier_index(&h.tier)
        .map_or(h.tier.clone(), |i| j.catalog.tiers[i].name.clone());
    format!("{} × {} · {}", h.quantity, name, euros(h.amount_cents))
}

fn held(ctx: Ctx) -> View {
    let journey = ctx.journey;
    let now = ctx.now;
    let line = create_memo(move || {
        journey.with(|j| match &j.stage {
            Stage::Held(h) | Stage::Paying { hold: h, .. } => (summary(j, h), h.email.clone()),
            _ => Default::default(),
        })
    });
    let left = create_memo(move || journey.with(|j| j.hold_left(now.get()).unwrap_or(0)));
    let paying = create_selector(move || journey.with(|j| matches!(j.stage, Stage::Paying { .. })));
    let hold_ms = journey.with_untracked(|j| match &j.stage {
        Stage::Held(h) | Stage::Paying { hold: h, .. } => h.granted_ms,
        _ => 600_000,
    });
    let cards: Vec<View> = TEST_CARDS
        .iter()
        .enumerate()
        .map(|(n, (token, title, what))| {
            let d = ctx.dispatch.clone();
            let class = if n == 0 { "btn-primary w-full" } else { "btn-secondary w-full" };
            view! {
                li {
                    button(r#type="button", class=class, disabled=move || paying.get(), on:click=move |_| d.send(Action::Pay(token))) {
                        span(class="block") { (*title) }
                        span(class="block text-xs font-semibold normal-case tracking-normal opacity-80") { "Demo token " code { (*token) } ": " (*what) }
                    }
                }
            }
        })
        .collect();
    let dc = ctx.dispatch.clone();
    view! {
        section(aria-labelledby="step-h", class="mx-auto max-w-2xl space-y-6 rounded-3xl border-2 border-acid/60 bg-white/5 p-6 sm:p-8") {
            div {
                h2(id="step-h", tabindex="-1", class="text-3xl font-black uppercase tracking-tight outline-none") { "Your passes are held" }
                p(class="mt-2 text-lg") { (line.with(|l| l.0.clone())) }
                p(class="text-sm text-mist") { "Tickets go to " (line.with(|l| l.1.clone())) }
            }
            div {
                p(class="flex items-baseline justify-between gap-4") {
                    span(class="font-bold uppercase tracking-wider text-cyan") { "Held for" }
                    span(class="font-mono text-4xl font-black tabular-nums", role="timer", aria-live="off", aria-label=move || format!("Hold time left {}", clock(left.get()))) { (clock(left.get())) }
                }
                div(class="mt-2 h-2 overflow-hidden rounded-full bg-white/10", aria-hidden="true") {
                    div(class="h-full rounded-full bg-gradient-to-r from-magenta to-acid transition-[width] duration-1000 ease-linear",
                        style=move || format!("width:{:.1}%", (left.get() as f64 * 100.0 / hold_ms as f64).clamp(0.0, 100.0)))
                }
                p(class="mt-2 text-sm text-mist") { "Pay before the time runs out, or the passes go back on sale." }
            }
            div(class="rounded-2xl border-2 border-dashed border-cyan/70 bg-cyan/5 p-5") {
                h3(class="text-lg font-black uppercase tracking-tight") {
                    span(class="mr-2 rounded bg-cyan px-2 py-0.5 text-xs text-night align-middle") { "Demo" }
                    "Simulated payment"
                }
                p(class="mt-1 text-sm text-mist") { "This shop is a demo: there is no card form and no money moves. Choose a test token." }
                ul(class="mt-4 grid gap-3") { (cards) }
            }
            (notices(&ctx))
            button(r#type="button", class="btn-ghost", disabled=move || paying.get(), on:click=move |_| dc.send(Action::Cancel)) {
                "Release my hold"
            }
        }
    }
}

fn confirming(ctx: Ctx) -> View {
    let journey = ctx.journey;
    let gave_up = create_selector(move || {
        journey.with(|j| matches!(j.stage, Stage::Confirming { gave_up: true, .. }))
    });
    let order = create_memo(move || {
        journey.with(|j| match &j.stage {
            Stage::Confirming { hold, .. } => hold.order_id.clone(),
            _ => String::new(),
        })
    });
    let d = ctx.dispatch.clone();
    view! {
        section(aria-labelledby="step-h", aria-busy=move || (!gave_up.get()).to_string(), class="mx-auto max-w-2xl space-y-5 rounded-3xl border-2 border-cyan/60 bg-white/5 p-6 sm:p-8") {
            h2(id="step-h", tabindex="-1", class="text-3xl font-black uppercase tracking-tight outline-none") { "Confirming your order" }
            div(class="flex items-center gap-4") {
                span(class="spinner", aria-hidden="true")
                p { "Payment received. Your passes are being written into the festival's books; this usually takes a few seconds." }
            }
            p(class="text-sm text-mist") { "Order " code(class="text-white") { (order.get_clone()) } }
            (if gave_up.get() {
                let d = d.clone();
                view! {
                    div(role="status", class="space-y-3") {
                        p { "This is taking longer than usual. Your order is safe: you will get your tickets by e-mail, or check again now." }
                        button(r#type="button", class="btn-secondary", on:click=move |_| d.send(Action::PollAgain)) { "Check again" }
                    }
                }
            } else {
                view! {}
            })
            (notices(&ctx))
        }
    }
}

fn confirmed(ctx: Ctx) -> View {
    let journey = ctx.journey;
    let (line, email, order, tickets) = journey.with_untracked(|j| match &j.stage {
        Stage::Confirmed { hold, tickets } => (
            summary(j, hold),
            hold.email.clone(),
            hold.order_id.clone(),
            tickets.clone(),
        ),
        _ => Default::default(),
    });
    let codes: Vec<View> = tickets
        .into_iter()
        .map(|code| {
            view! {
                li(class="ticket flex items-center justify-between gap-4 rounded-2xl bg-acid px-5 py-4 text-night") {
                    span(class="text-xs font-black uppercase tracking-widest") { "Frequency VIP" }
                    code(class="font-mono text-lg font-black tracking-wider") { (code) }
                }
            }
        })
        .collect();
    let d = ctx.dispatch.clone();
    view! {
        section(aria-labelledby="step-h", class="mx-auto max-w-2xl space-y-6 rounded-3xl border-2 border-acid bg-gradient-to-br from-violet/30 to-magenta/20 p-6 sm:p-8") {
            div {
                p(class="text-sm font-bold uppercase tracking-[0.3em] text-acid") { "Confirmed" }
                h2(id="step-h", tabindex="-1", class="mt-1 text-4xl font-black uppercase tracking-tight outline-none") { "You're going to Frequency!" }
                p(class="mt-2 text-lg") { (line) }
                p(class="text-sm text-mist") { "Order " code(class="text-white") { (order) } " · tickets sent to " (email) }
            }
            div {
                h3(class="text-sm font-bold uppercase tracking-wider text-cyan") { "Your ticket codes" }
                ol(class="mt-3 grid gap-3", aria-label="Ticket codes") { (codes) }
            }
            button(r#type="button", class="btn-secondary", on:click=move |_| d.send(Action::StartOver)) { "Buy more passes" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_time() {
        assert_eq!(euros(34_900), "€349");
        assert_eq!(euros(124_950), "€1,249.50");
        assert_eq!(euros(100_000_005), "€1,000,000.05");
        assert_eq!(clock(599_001), "10:00");
        assert_eq!(clock(599_000), "09:59");
        assert_eq!(clock(3_723_000), "1:02:03");
        assert_eq!(clock(-5), "00:00");
        assert_eq!(clock(90_061_000), "1 d 01:01:01");
        assert_eq!(badge(TierState::FewLeft, 3), "Only 3 left");
        assert_eq!(badge(TierState::SoldOut, 0), "Sold out");
        assert_eq!(badge(TierState::Paused, 40), "Paused, back in a moment");
    }
}
