//! The fans' shop: the journey (a plain state machine, tested natively), the views (rendered to
//! HTML at build time by `bin/prerender.rs` and hydrated in the browser), and the browser driver
//! that talks to the API (wasm32 only).

pub mod api;
#[cfg(target_arch = "wasm32")]
pub mod browser;
pub mod journey;
pub mod view;
