//! Renders the shop's first screen to HTML at build time and writes it, with the catalog it
//! was rendered from, into the bundle's `index.html`, so fans see the tiers before the wasm
//! arrives and the browser hydrates from the same state.
//!
//!   prerender DIST/index.html [--event frequency-2027]

use anyhow::{Context, bail};
use site::api::Catalog;
use site::journey::Journey;
use site::view::{Dispatch, page};
use sycamore::prelude::*;

/// Where the page goes in the template.
const MOUNT: &str = r#"<div id="app"></div>"#;

/// The seeded catalog (`site/catalog.json`, the same as `ops seed` writes: `Event::frequency`;
/// the e2e test checks it against the live API). Hold time: the seed's default; the page counts
/// down to the deadline the API answers, so only the progress bar's full width uses it.
fn catalog(event: &str) -> anyhow::Result<Catalog> {
    let mut c: Catalog = serde_json::from_str(include_str!("../../catalog.json"))?;
    c.event = event.to_owned();
    Ok(c)
}

/// The page rendered from the journey's first state.
pub fn render(catalog: &Catalog) -> String {
    let catalog = catalog.clone();
    sycamore::render_to_string(move || {
        let journey = create_signal(Journey::new(catalog));
        page(journey, create_signal(0), Dispatch::new(|_| {}))
    })
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut event = "frequency-2027".to_owned();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--event" => event = args.next().context("--event needs a value")?,
            _ if file.is_none() => file = Some(a),
            _ => bail!("usage: prerender DIST/index.html [--event EVENT]"),
        }
    }
    let file = file.context("usage: prerender DIST/index.html [--event EVENT]")?;
    let template = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
    if !template.contains(MOUNT) {
        bail!("{file} has no {MOUNT} to render into (already prerendered?)");
    }
    let catalog = catalog(&event)?;
    // JSON inside <script>: "</" must not end the element.
    let json = serde_json::to_string(&catalog)?.replace("</", "<\\/");
    let html = template.replacen(
        MOUNT,
        &format!(
            "<div id=\"app\">{}</div>\n<script id=\"catalog\" type=\"application/json\">{json}</script>",
            render(&catalog)
        ),
        1,
    );
    std::fs::write(&file, html).with_context(|| format!("writing {file}"))?;
    eprintln!(
        "prerendered {} tiers of {} into {file}",
        catalog.tiers.len(),
        catalog.event
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_tier_with_its_price_before_any_live_data() {
        let c = catalog("frequency-2027").unwrap();
        let html = render(&c);
        for t in &c.tiers {
            assert!(html.contains(&t.name), "{}", t.name);
            assert!(html.contains(&site::view::euros(t.price_cents)));
        }
        assert!(html.contains("data-hk"), "hydration keys");
        assert!(
            html.contains("Checking availability"),
            "the button waits for live data"
        );
        assert!(
            html.contains(r#"for="email""#) && html.contains(r#"id="email""#),
            "labelled"
        );
    }
}
