//! The browser entry point: trunk builds this for wasm32 (see site/index.html). On the native
//! target it only says how to build the site.

fn main() {
    #[cfg(target_arch = "wasm32")]
    site::browser::start();
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("the site runs in the browser: scripts/site build (or scripts/dev) builds it");
}
