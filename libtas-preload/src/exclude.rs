//! `TAS_EXCLUDE`: which TCP sockets an unmodified program keeps on the
//! kernel stack under `libtas_preload.so` (like Onload's
//! `EF_DONT_ACCELERATE` lists). A comma-separated list of
//!
//! * `PORT` or `LOW-HIGH`: a socket bound to such a local port (so a
//!   listener on it), or connecting to such a remote port;
//! * `A.B.C.D`: a socket bound to that address, or connecting to it;
//! * `A.B.C.D:PORT`: a socket bound to that address and port (or to
//!   `0.0.0.0` and that port), or connecting to exactly that address and
//!   port.
//!
//! The list is parsed once; [`Exclude::parse`] returns what it could not
//! read as one-line messages (the shim prints them and goes on), so a typo
//! never stops a program. `tasctl run --exclude-ports` uses the same parser
//! to refuse a bad list before starting anything.

use std::net::Ipv4Addr;

/// The environment variable holding the list.
pub const EXCLUDE_ENV: &str = "TAS_EXCLUDE";

/// One entry of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Ports `lo..=hi`.
    Ports(u16, u16),
    /// One IPv4 address (host order).
    Addr(u32),
    /// An address (host order) and port.
    AddrPort(u32, u16),
}

/// The parsed list (empty: every TCP socket may use TAS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclude {
    rules: Vec<Rule>,
}

fn port(s: &str) -> Option<u16> {
    // Digits only: "+80" or " 80" are typos, not ports.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|&p| p != 0)
}

/// One entry, or why it is not one.
pub fn parse_rule(e: &str) -> Result<Rule, String> {
    let bad = || {
        format!("'{e}': not a port (1-65535), port range (LOW-HIGH), IPv4 address or address:port")
    };
    if let Some((a, p)) = e.split_once(':') {
        let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
        return Ok(Rule::AddrPort(a.into(), port(p).ok_or_else(bad)?));
    }
    if let Some((lo, hi)) = e.split_once('-') {
        let (lo, hi) = (port(lo).ok_or_else(bad)?, port(hi).ok_or_else(bad)?);
        if lo > hi {
            return Err(format!("'{e}': the range's first port is above its last"));
        }
        return Ok(Rule::Ports(lo, hi));
    }
    if let Some(p) = port(e) {
        return Ok(Rule::Ports(p, p));
    }
    if e.contains('.') {
        if let Ok(a) = e.parse::<Ipv4Addr>() {
            return Ok(Rule::Addr(a.into()));
        }
    }
    Err(bad())
}

impl Exclude {
    /// Parses a list (entries separated by commas; blanks around entries
    /// and empty entries are ignored). Returns the entries it read and one
    /// message per entry it could not read.
    pub fn parse(list: &str) -> (Exclude, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for e in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match parse_rule(e) {
                Ok(r) => rules.push(r),
                Err(m) => errors.push(m),
            }
        }
        (Exclude { rules }, errors)
    }

    /// [`Exclude::parse`] of `$TAS_EXCLUDE` (empty when unset or not UTF-8;
    /// the latter reported).
    pub fn from_env() -> (Exclude, Vec<String>) {
        match std::env::var(EXCLUDE_ENV) {
            Ok(v) => Self::parse(&v),
            Err(std::env::VarError::NotPresent) => (Exclude::default(), Vec::new()),
            Err(std::env::VarError::NotUnicode(_)) => (
                Exclude::default(),
                vec!["the whole value (not UTF-8)".to_string()],
            ),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether a socket binding to `ip:port` (host order; 0 = any address
    /// or an ephemeral port) stays on the kernel stack.
    pub fn bind(&self, ip: u32, port: u16) -> bool {
        self.rules.iter().any(|&r| match r {
            Rule::Ports(lo, hi) => port != 0 && (lo..=hi).contains(&port),
            Rule::Addr(a) => ip != 0 && ip == a,
            Rule::AddrPort(a, p) => port != 0 && port == p && (ip == 0 || ip == a),
        })
    }

    /// Whether a socket connecting to `ip:port` (host order) stays on the
    /// kernel stack.
    pub fn connect(&self, ip: u32, port: u16) -> bool {
        self.rules.iter().any(|&r| match r {
            Rule::Ports(lo, hi) => (lo..=hi).contains(&port),
            Rule::Addr(a) => ip == a,
            Rule::AddrPort(a, p) => ip == a && port == p,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> u32 {
        s.parse::<Ipv4Addr>().unwrap().into()
    }

    #[test]
    fn entries_of_every_kind_parse_and_blanks_are_ignored() {
        let (x, errs) = Exclude::parse(" 22, 8000-8100,,10.0.0.5 ,198.18.0.2:6379,");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            x.rules(),
            [
                Rule::Ports(22, 22),
                Rule::Ports(8000, 8100),
                Rule::Addr(ip("10.0.0.5")),
                Rule::AddrPort(ip("198.18.0.2"), 6379),
            ]
        );
        assert!(Exclude::parse("").0.is_empty());
        assert!(Exclude::parse(" , ,").1.is_empty());
    }

    #[test]
    fn bad_entries_are_reported_one_line_each_and_the_rest_kept() {
        let (x, errs) =
            Exclude::parse("80,http,0,65536,1.2.3,1.2.3.4:0,9-3,-5,+7,1.2.3.4:x,::1,443");
        assert_eq!(x.rules(), [Rule::Ports(80, 80), Rule::Ports(443, 443)]);
        assert_eq!(errs.len(), 10, "{errs:?}");
        assert!(errs.iter().all(|e| !e.contains('\n')));
        assert_eq!(
            errs[0],
            "'http': not a port (1-65535), port range (LOW-HIGH), IPv4 address or address:port"
        );
        assert_eq!(errs[5], "'9-3': the range's first port is above its last");
    }

    #[test]
    fn binds_and_connects_match_as_documented() {
        let (x, _) = Exclude::parse("22,8000-8100,10.0.0.5,198.18.0.2:6379");
        let any = 0;
        // Ports: local port of a bind, remote port of a connect.
        assert!(x.bind(any, 22) && x.bind(ip("198.18.0.1"), 8050));
        assert!(!x.bind(any, 0) && !x.bind(any, 8101));
        assert!(x.connect(ip("198.18.0.9"), 8000) && !x.connect(ip("198.18.0.9"), 7999));
        // Addresses: a bind to exactly that address, any connect to it.
        assert!(x.bind(ip("10.0.0.5"), 0) && !x.bind(any, 9));
        assert!(x.connect(ip("10.0.0.5"), 1234));
        // Address and port: a bind to it or to 0.0.0.0 and that port; a
        // connect to exactly it.
        assert!(x.bind(ip("198.18.0.2"), 6379) && x.bind(any, 6379));
        assert!(!x.bind(ip("198.18.0.1"), 6379));
        assert!(x.connect(ip("198.18.0.2"), 6379));
        assert!(!x.connect(ip("198.18.0.2"), 6380) && !x.connect(ip("198.18.0.3"), 6379));
        assert!(!Exclude::default().bind(any, 80) && !Exclude::default().connect(1, 80));
    }
}
