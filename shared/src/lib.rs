//! What the three functions share: the domain, configuration, errors as problem+json,
//! telemetry, the Redis gate, the Pub/Sub publisher, payments and the repository.

pub mod audit;
pub mod config;
pub mod deadletters;
pub mod domain;
pub mod error;
pub mod gate;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod payment;
pub mod publisher;
pub mod ratelimit;
pub mod recovery;
pub mod repo;
pub mod rfc3339;
pub mod signing;
pub mod telemetry;
pub mod testing;

pub use error::ApiError;

/// The services' global allocator (declared in each `main.rs`): mimalloc, because glibc's
/// malloc cost a fifth of the CPU under load (see docs/DECISIONS.md).
pub use mimalloc::MiMalloc as Allocator;

/// A map for small in-process tables keyed by our own names (routes, seeded events), read on
/// every request: foldhash instead of SipHash, which was a fiftieth of the availability read's
/// CPU. Their keys are not chosen by callers, so SipHash's flooding resistance buys nothing.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
