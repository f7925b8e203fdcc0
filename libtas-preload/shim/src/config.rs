//! The shim's configuration, read once from the environment when the
//! process-wide state is created: `TAS_SPIN_US`, `TAS_PROFILE`, `TAS_CONTEXTS`, `TAS_IP`,
//! `TAS_PRELOAD_DEBUG`, `TAS_PRELOAD_DISABLE`, `TAS_EXCLUDE`, `TAS_USER_WAIT` (`TAS_SOCKET`
//! is read by the `tas` crate at attach). Nothing here changes after
//! start-up.

use crate::ctx::MAX_CTX;
use tas::exclude::Exclude;

pub struct Config {
    /// `TAS_SPIN_US`: spin this long (µs) before blocking in a wait; unset:
    /// self-tuned (`spin.rs`).
    pub spin_us: Option<u64>,
    /// `TAS_PROFILE`: the program's goal for the spin controller.
    pub profile: Option<tas_tune::Goal>,
    pub max_ctx: usize,
    /// `TAS_IP`: the service's address when the daemon does not announce it.
    pub tas_ip: Option<u32>,
    pub debug: bool,
    pub disabled: bool,
    /// `TAS_EXCLUDE`: sockets left to the kernel stack.
    pub exclude: Exclude,
    /// `TAS_USER_WAIT` (default on; `0` turns it off): `epoll_wait`
    /// answers TAS sockets' readability from user space (`vready.rs`).
    pub user_wait: bool,
    /// `TAS_PRELOAD_TEST_LAZY_DELAY_US`, for tests only: a `poll`/`select`
    /// sleeps this long between the kernel's answer and its user-space look
    /// at lazy sockets (`mux::poll_block`), so that a test can make news
    /// arrive in between. Unset: no delay (one branch).
    pub test_lazy_delay_us: Option<u64>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl Config {
    /// Reads the environment (defaults for what is unset or unparsable;
    /// `TAS_EXCLUDE` entries it cannot read are named in one line on
    /// stderr and skipped).
    pub fn from_env() -> Config {
        let (exclude, errors) = Exclude::from_env();
        if !errors.is_empty() {
            crate::sys::log(&format!("TAS_EXCLUDE: ignored {}", errors.join("; ")));
        }
        let tas_ip = std::env::var("TAS_IP")
            .ok()
            .and_then(|s| {
                s.split('/')
                    .next()
                    .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
            })
            .map(u32::from);
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let (spin_us, profile) = tas::spin::settings_from_env();
        let profile = profile.unwrap_or_else(|e| {
            crate::sys::log(&format!("{e}; ignored"));
            None
        });
        Config {
            spin_us,
            profile,
            max_ctx: (env_u64("TAS_CONTEXTS").unwrap_or(ncpu.min(4) as u64) as usize)
                .clamp(1, MAX_CTX),
            tas_ip,
            debug: std::env::var_os("TAS_PRELOAD_DEBUG").is_some(),
            disabled: matches!(std::env::var("TAS_PRELOAD_DISABLE").as_deref(), Ok("1")),
            exclude,
            user_wait: !matches!(std::env::var("TAS_USER_WAIT").as_deref(), Ok("0")),
            test_lazy_delay_us: env_u64("TAS_PRELOAD_TEST_LAZY_DELAY_US"),
        }
    }
}
