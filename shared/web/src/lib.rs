//! The functions' HTTP side: errors as problem+json, the router's middleware and serving,
//! metrics, the OpenAPI documents, and where a function listens.

mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod rfc3339;

pub use config::HttpArgs;
pub use error::ApiError;

/// The services' global allocator (declared in each `main.rs`): mimalloc, because glibc's
/// malloc cost a fifth of the CPU under load (see docs/DECISIONS.md).
pub use mimalloc::MiMalloc as Allocator;

/// A map for small in-process tables keyed by our own names (routes, seeded events), read on
/// every request: foldhash instead of SipHash, which was a fiftieth of the availability read's
/// CPU. Their keys are not chosen by callers, so SipHash's flooding resistance buys nothing.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
