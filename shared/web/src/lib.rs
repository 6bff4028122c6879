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
