//! Configuration from the environment (flags work too), validated at start: a missing or bad
//! variable stops the service with clap's one-line error, before anything is served.

/// Where the function listens (Cloud Run sets `PORT`).
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// TCP port to listen on, on all interfaces.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
}
