//! Congestion control: the algorithms and their parameters.
//!
//! The slow path runs a control loop per flow (see `stack/ccloop.rs`): every
//! control interval it reads the flow's feedback counters from the fast path
//! (acknowledged bytes, ECN-echoed bytes, fast retransmits, RTT estimate)
//! plus the retransmission timeouts it issued itself, hands them to the
//! flow's [`FlowControl`], and writes the resulting [`Limit`] (a rate or a
//! window) back into the flow's state, where the fast path enforces it.
//!
//! # Adding an algorithm
//!
//! One file: a `pub const SPEC: AlgoSpec` (name, help, parameter table and
//! a constructor) and a type implementing [`FlowControl`]; then one line in
//! [`ALGORITHMS`]. Parameters are declared as [`ParamSpec`]s and read by
//! index at every update, so a parameter changed at run time (`tasctl cc
//! set`) applies to live flows at their next update.
//!
//! # Switching algorithms on live flows
//!
//! A flow whose setting now names another algorithm gets a new
//! [`FlowControl`] at its next update, built from a [`Start`] that carries
//! the limit in force, the RTT and the measured send rate: the new algorithm
//! continues from the same sending speed (a window becomes `rate × RTT`, a
//! rate becomes `window / RTT`) instead of starting over, so nothing stalls
//! or resets.

use std::collections::BTreeMap;
use std::fmt;

pub mod const_rate;
pub mod dctcp_rate;
pub mod dctcp_win;
pub mod timely;

/// Every algorithm, by name. The first is the default.
pub const ALGORITHMS: &[&AlgoSpec] = &[
    &dctcp_rate::SPEC,
    &dctcp_win::SPEC,
    &timely::SPEC,
    &const_rate::SPEC,
];

/// The default algorithm (`dctcp-rate`).
pub fn default_algo() -> &'static AlgoSpec {
    ALGORITHMS[0]
}

/// Looks an algorithm up by name.
pub fn algo(name: &str) -> Option<&'static AlgoSpec> {
    ALGORITHMS.iter().copied().find(|a| a.name == name)
}

/// What the fast path is told to enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Rate in kbit/s; 0 = unlimited.
    Rate(u64),
    /// Congestion window in bytes; 0 = unlimited.
    Window(u32),
}

impl Limit {
    /// The limit as a rate (kbit/s), converting a window over `rtt_us`.
    /// `fallback` is used for "unlimited" (typically the measured rate).
    pub fn as_rate_kbps(self, rtt_us: u32, fallback: u64) -> u64 {
        match self {
            Limit::Rate(0) | Limit::Window(0) => fallback,
            Limit::Rate(r) => r,
            // bytes·8 / µs = Mbit/s; ·1000 = kbit/s.
            Limit::Window(w) => (w as u64 * 8000) / rtt_us.max(1) as u64,
        }
    }

    /// The limit as a window (bytes), converting a rate over `rtt_us`.
    pub fn as_window(self, rtt_us: u32, fallback_kbps: u64) -> u64 {
        let rate = match self {
            Limit::Window(w) if w > 0 => return w as u64,
            Limit::Rate(r) if r > 0 => r,
            _ => fallback_kbps,
        };
        rate * rtt_us as u64 / 8000
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Limit::Rate(0) | Limit::Window(0) => write!(f, "unlimited"),
            Limit::Rate(r) => write!(f, "{}", fmt_value(Unit::Rate, r as f64)),
            Limit::Window(w) => write!(f, "cwnd {}", fmt_value(Unit::Bytes, w as f64)),
        }
    }
}

/// Feedback for one control-loop update, accumulated since the last update
/// that was applied.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Feedback {
    /// Time covered (ns).
    pub elapsed_ns: u64,
    /// Payload bytes acknowledged.
    pub acked: u64,
    /// Of those, bytes acknowledged by ACKs carrying ECE.
    pub ecn: u64,
    /// Fast retransmits (three duplicate ACKs).
    pub fast_retransmits: u32,
    /// Retransmission timeouts.
    pub timeouts: u32,
    /// Latest smoothed RTT (µs); 0 = no sample yet.
    pub rtt_us: u32,
    /// Sender MSS (payload bytes per segment).
    pub mss: u32,
    /// Bytes in flight when the counters were read.
    pub in_flight: u32,
    /// Bytes the app has queued but not sent yet, when read.
    pub queued: u32,
    /// No update was applied for the loop's `max_interval`: the algorithm
    /// should not defer again.
    pub overdue: bool,
    /// Loss recovery was running at one of the reads since the last applied
    /// update: the cumulative ACK may have stood still behind a hole while
    /// the peer received, so `acked` under-measures what was sent (a loss is
    /// reported only when its recovery ends).
    pub recovering: bool,
}

impl Feedback {
    /// Acknowledged bytes as a rate over `elapsed_ns` (kbit/s).
    pub fn send_rate_kbps(&self) -> u64 {
        if self.elapsed_ns == 0 {
            return 0;
        }
        // bytes·8 bits / (ns / 1e9) s / 1000 = bytes · 8e6 / ns kbit/s.
        ((self.acked as u128 * 8_000_000) / self.elapsed_ns as u128) as u64
    }

    /// Fraction of acknowledged bytes that were ECN-marked.
    pub fn ecn_fraction(&self) -> f64 {
        if self.acked == 0 {
            0.0
        } else {
            (self.ecn as f64 / self.acked as f64).min(1.0)
        }
    }

    /// Segments' worth of acknowledged bytes.
    pub fn acked_segments(&self) -> u64 {
        self.acked / self.mss.max(1) as u64
    }

    /// A loss signal: fast retransmit or timeout.
    pub fn loss(&self) -> bool {
        self.fast_retransmits > 0 || self.timeouts > 0
    }

    /// Adds newer feedback (counters add up, snapshots take the newer value).
    pub fn merge(&mut self, n: &Feedback) {
        self.elapsed_ns += n.elapsed_ns;
        self.acked += n.acked;
        self.ecn += n.ecn;
        self.fast_retransmits = self.fast_retransmits.saturating_add(n.fast_retransmits);
        self.timeouts = self.timeouts.saturating_add(n.timeouts);
        if n.rtt_us > 0 {
            self.rtt_us = n.rtt_us;
        }
        self.mss = n.mss;
        self.in_flight = n.in_flight;
        self.queued = n.queued;
        self.overdue = n.overdue;
        self.recovering |= n.recovering;
    }
}

/// Send rate measured over epochs of at least `min_segs` acknowledged
/// segments, for the "rate at most cap × send rate" rule of the rate-based
/// algorithms: a rate measured over one or two segments says nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CapMeter {
    acked: u64,
    elapsed_ns: u64,
}

impl CapMeter {
    /// Adds an update's feedback; at the end of an epoch returns the send
    /// rate over it (kbit/s) and starts the next epoch. An epoch also ends
    /// with an overdue update (an idle flow measures ~0).
    pub fn add(&mut self, fb: &Feedback, min_segs: u64) -> Option<f64> {
        self.acked += fb.acked;
        self.elapsed_ns += fb.elapsed_ns;
        if self.elapsed_ns == 0 || (self.acked < min_segs * fb.mss.max(1) as u64 && !fb.overdue) {
            return None;
        }
        let r = self.acked as f64 * 8e6 / self.elapsed_ns as f64;
        *self = CapMeter::default();
        Some(r)
    }
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The limit was recomputed (see [`FlowControl::limit`]); the feedback
    /// was consumed.
    Apply,
    /// Not enough feedback yet: keep accumulating. `wait_ns` hints when
    /// enough may be there (the loop never waits longer than its
    /// `max_interval`).
    Defer { wait_ns: u64 },
}

/// How a flow's controller starts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Start {
    pub mss: u32,
    /// RTT (µs) from the handshake or the fast path's estimate; 0 = unknown.
    pub rtt_us: u32,
    /// For a flow switching algorithms: the limit in force.
    pub current: Option<Limit>,
    /// For a flow switching algorithms: its recent send rate (kbit/s).
    pub send_rate_kbps: u64,
    /// For a flow switching algorithms: the previous algorithm's ECN
    /// estimate (DCTCP's α), if it had one.
    pub alpha: Option<f64>,
}

impl Start {
    /// RTT to use for conversions when none was measured.
    pub const DEFAULT_RTT_US: u32 = 100;

    pub fn rtt_or_default(&self) -> u32 {
        if self.rtt_us > 0 {
            self.rtt_us
        } else {
            Self::DEFAULT_RTT_US
        }
    }

    /// The rate a switching flow was sending at (for rate-based successors):
    /// its limit converted to a rate, or `init` for a new flow.
    pub fn handover_rate(&self, init: u64) -> u64 {
        match self.current {
            None => init,
            Some(l) => {
                let fallback = if self.send_rate_kbps > 0 {
                    self.send_rate_kbps
                } else {
                    init
                };
                l.as_rate_kbps(self.rtt_or_default(), fallback)
            }
        }
    }
}

/// Controller state of one flow, as shown by `tasctl flows`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CcInfo {
    pub slow_start: bool,
    /// DCTCP's α (EWMA of the marked fraction); None for other algorithms.
    pub alpha: Option<f64>,
}

/// One flow's congestion controller.
pub trait FlowControl: Send + fmt::Debug {
    /// Runs the control law on the feedback accumulated since the last
    /// applied update. `p` are the current parameters of the flow's setting.
    fn update(&mut self, p: &Params, fb: &Feedback) -> Verdict;
    /// The limit the fast path should enforce now.
    fn limit(&self) -> Limit;
    fn info(&self) -> CcInfo {
        CcInfo::default()
    }
}

/// An algorithm: its name, parameters and constructor.
pub struct AlgoSpec {
    pub name: &'static str,
    pub help: &'static str,
    pub params: &'static [ParamSpec],
    /// A controller for a new flow (or a flow switching to this algorithm).
    pub new_flow: fn(&Params, &Start) -> Box<dyn FlowControl>,
}

impl fmt::Debug for AlgoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for AlgoSpec {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name
    }
}

/// Unit of a parameter; values are stored as `f64` in the canonical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// kbit/s. Written `10mbps`, `1.5gbps`, `500kbps`, `2000bps`; a plain
    /// number is Mbit/s.
    Rate,
    /// Nanoseconds. Written `30us`, `2ms`, `1s`, `500ns`; a plain number is µs.
    Time,
    /// Bytes. Written `64k`, `1m` or plain.
    Bytes,
    /// A plain number (count, ratio, factor).
    Number,
}

/// One parameter of an algorithm (or of the control loop).
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub unit: Unit,
    pub default: f64,
    pub min: f64,
    pub max: f64,
    pub help: &'static str,
}

/// Parameters of the control loop, part of every setting.
pub const LOOP_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "interval",
        unit: Unit::Number,
        default: 2.0,
        min: 0.1,
        max: 1000.0,
        help: "control interval in RTTs of the flow",
    },
    ParamSpec {
        name: "min_interval",
        unit: Unit::Time,
        default: 20_000.0,
        min: 1_000.0,
        max: 1e10,
        help: "shortest control interval",
    },
    ParamSpec {
        name: "max_interval",
        unit: Unit::Time,
        default: 10_000_000.0,
        min: 10_000.0,
        max: 1e10,
        help: "longest time between applied updates (and the poll period of idle flows)",
    },
];

/// Indices into [`LOOP_PARAMS`].
pub const LOOP_INTERVAL: usize = 0;
pub const LOOP_MIN_INTERVAL: usize = 1;
pub const LOOP_MAX_INTERVAL: usize = 2;

/// Values for a parameter table.
#[derive(Debug, Clone)]
pub struct Params {
    pub specs: &'static [ParamSpec],
    vals: Vec<f64>,
}

impl PartialEq for Params {
    fn eq(&self, o: &Self) -> bool {
        std::ptr::eq(self.specs, o.specs) && self.vals == o.vals
    }
}

impl Params {
    /// Every parameter at its default.
    pub fn defaults(specs: &'static [ParamSpec]) -> Self {
        Params {
            specs,
            vals: specs.iter().map(|s| s.default).collect(),
        }
    }

    /// Value of parameter `i` (an index into `specs`).
    #[inline]
    pub fn get(&self, i: usize) -> f64 {
        self.vals[i]
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        let name = name.replace('-', "_");
        self.specs.iter().position(|s| s.name == name)
    }

    /// Sets a parameter from text with units (`10mbps`, `30us`, `0.8`).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), CcError> {
        let i = self
            .index(name)
            .ok_or_else(|| CcError::UnknownParam(name.to_string()))?;
        let spec = &self.specs[i];
        let v = parse_value(spec.unit, value).map_err(|e| CcError::BadValue {
            param: spec.name.to_string(),
            value: value.to_string(),
            reason: e,
        })?;
        if !(spec.min..=spec.max).contains(&v) {
            return Err(CcError::BadValue {
                param: spec.name.to_string(),
                value: value.to_string(),
                reason: format!(
                    "must be between {} and {}",
                    fmt_value(spec.unit, spec.min),
                    fmt_value(spec.unit, spec.max)
                ),
            });
        }
        self.vals[i] = v;
        Ok(())
    }

    /// (name, value as text) for every parameter.
    pub fn to_text(&self) -> Vec<(String, String)> {
        self.specs
            .iter()
            .zip(&self.vals)
            .map(|(s, v)| (s.name.to_string(), fmt_value(s.unit, *v)))
            .collect()
    }
}

/// Errors of `cc set` and the `--cc` flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CcError {
    #[error("unknown congestion control algorithm '{0}' (known: {names})", names = algo_names())]
    UnknownAlgo(String),
    #[error("unknown parameter '{0}'")]
    UnknownParam(String),
    #[error("{algo} has no parameter '{param}' (it has: {known})")]
    UnknownParamFor {
        param: String,
        algo: &'static str,
        known: String,
    },
    #[error("bad value '{value}' for {param}: {reason}")]
    BadValue {
        param: String,
        value: String,
        reason: String,
    },
    #[error("'{0}' is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("port {0} has no setting of its own")]
    NoPortSetting(u16),
    #[error("port must be 1..65535")]
    BadPort,
}

/// Names of all algorithms, comma-separated.
pub fn algo_names() -> String {
    ALGORITHMS
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn split_num(s: &str) -> (&str, &str) {
    let i = s
        .find(|c: char| {
            !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')
        })
        .unwrap_or(s.len());
    // "1e" followed by a letter: the 'e' belongs to the unit only if what
    // follows is not a number; units here never start with 'e'.
    (&s[..i], &s[i..])
}

/// Parses `text` in `unit` (see [`Unit`] for the accepted suffixes).
pub fn parse_value(unit: Unit, text: &str) -> Result<f64, String> {
    let t = text.trim().to_ascii_lowercase();
    let (num, suffix) = split_num(&t);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    if !n.is_finite() || n < 0.0 {
        return Err("must be a non-negative number".into());
    }
    let mult = match (unit, suffix.trim()) {
        (Unit::Rate, "" | "mbps" | "mbit" | "m") => 1000.0,
        (Unit::Rate, "kbps" | "kbit" | "k") => 1.0,
        (Unit::Rate, "gbps" | "gbit" | "g") => 1e6,
        (Unit::Rate, "bps" | "bit") => 1e-3,
        (Unit::Time, "" | "us") => 1e3,
        (Unit::Time, "ns") => 1.0,
        (Unit::Time, "ms") => 1e6,
        (Unit::Time, "s") => 1e9,
        (Unit::Bytes, "" | "b") => 1.0,
        (Unit::Bytes, "k" | "kb" | "kib") => 1024.0,
        (Unit::Bytes, "m" | "mb" | "mib") => 1024.0 * 1024.0,
        (Unit::Number, "") => 1.0,
        (u, s) => {
            let expect = match u {
                Unit::Rate => "kbps, mbps, gbps",
                Unit::Time => "ns, us, ms, s",
                Unit::Bytes => "k, m",
                Unit::Number => "no unit",
            };
            return Err(format!("unknown unit '{s}' (use {expect})"));
        }
    };
    Ok(n * mult)
}

fn trim_num(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Formats a value in `unit` so that [`parse_value`] reads it back.
pub fn fmt_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Rate => {
            if v >= 1e6 {
                format!("{}gbps", trim_num(v / 1e6))
            } else if v >= 1e3 {
                format!("{}mbps", trim_num(v / 1e3))
            } else {
                format!("{}kbps", trim_num(v))
            }
        }
        Unit::Time => {
            if v >= 1e9 {
                format!("{}s", trim_num(v / 1e9))
            } else if v >= 1e6 {
                format!("{}ms", trim_num(v / 1e6))
            } else if v >= 1e3 {
                format!("{}us", trim_num(v / 1e3))
            } else {
                format!("{}ns", trim_num(v))
            }
        }
        Unit::Bytes => {
            if v >= 1024.0 * 1024.0 && v % (1024.0 * 1024.0) == 0.0 {
                format!("{}m", trim_num(v / (1024.0 * 1024.0)))
            } else if v >= 1024.0 && v % 1024.0 == 0.0 {
                format!("{}k", trim_num(v / 1024.0))
            } else {
                trim_num(v)
            }
        }
        Unit::Number => trim_num(v),
    }
}

/// The congestion control of one scope (global or a listening port): the
/// algorithm with its parameters, and the control loop's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub algo: &'static AlgoSpec,
    pub params: Params,
    pub loop_params: Params,
}

impl Setting {
    /// `algo` with every parameter at its default.
    pub fn defaults(algo: &'static AlgoSpec) -> Self {
        Setting {
            algo,
            params: Params::defaults(algo.params),
            loop_params: Params::defaults(LOOP_PARAMS),
        }
    }

    /// Sets one parameter (the algorithm's or the loop's).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), CcError> {
        if self.params.index(key).is_some() {
            self.params.set(key, value)
        } else if self.loop_params.index(key).is_some() {
            self.loop_params.set(key, value)
        } else {
            let known: Vec<&str> = self
                .params
                .specs
                .iter()
                .chain(LOOP_PARAMS)
                .map(|s| s.name)
                .collect();
            Err(CcError::UnknownParamFor {
                param: key.to_string(),
                algo: self.algo.name,
                known: known.join(", "),
            })
        }
    }

    pub fn interval_rtts(&self) -> f64 {
        self.loop_params.get(LOOP_INTERVAL)
    }
    pub fn min_interval_ns(&self) -> u64 {
        self.loop_params.get(LOOP_MIN_INTERVAL) as u64
    }
    pub fn max_interval_ns(&self) -> u64 {
        self.loop_params.get(LOOP_MAX_INTERVAL) as u64
    }

    /// Control interval for a flow with this RTT (µs; 0 = unknown).
    pub fn interval_ns(&self, rtt_us: u32) -> u64 {
        let rtt = if rtt_us > 0 {
            rtt_us
        } else {
            Start::DEFAULT_RTT_US
        } as f64;
        let t = (rtt * 1000.0 * self.interval_rtts()) as u64;
        t.clamp(
            self.min_interval_ns(),
            self.max_interval_ns().max(self.min_interval_ns()),
        )
    }

    /// Every parameter as text: the algorithm's, then the loop's.
    pub fn to_text(&self) -> Vec<(String, String)> {
        let mut v = self.params.to_text();
        v.extend(self.loop_params.to_text());
        v
    }
}

/// Congestion control configuration: the base setting of every algorithm
/// (from the command line), the global setting and per-port settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CcConfig {
    /// What an algorithm starts from when a scope switches to it.
    pub base: Vec<Setting>,
    pub global: Setting,
    /// Settings of listening ports: apply to flows accepted on that port.
    pub ports: BTreeMap<u16, Setting>,
}

impl Default for CcConfig {
    fn default() -> Self {
        CcConfig::new(default_algo())
    }
}

/// Splits `key=value`.
pub fn key_value(s: &str) -> Result<(String, String), CcError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(CcError::NotKeyValue(s.to_string())),
    }
}

impl CcConfig {
    /// Every algorithm at its defaults; `global` selected.
    pub fn new(global: &'static AlgoSpec) -> Self {
        CcConfig {
            base: ALGORITHMS.iter().map(|a| Setting::defaults(a)).collect(),
            global: Setting::defaults(global),
            ports: BTreeMap::new(),
        }
    }

    /// A configuration with one algorithm selected globally and `kv`
    /// applied to it. Convenience for tests.
    pub fn with(algo_name: &str, kv: &[(&str, &str)]) -> Result<Self, CcError> {
        let mut c = CcConfig::default();
        let kv: Vec<(String, String)> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        c.set(None, algo_name, &kv)?;
        Ok(c)
    }

    fn base_of(&self, algo: &'static AlgoSpec) -> Setting {
        self.base
            .iter()
            .find(|s| s.algo == algo)
            .cloned()
            .unwrap_or_else(|| Setting::defaults(algo))
    }

    /// Changes a base setting (command-line flags); the global setting
    /// follows when it uses that algorithm.
    pub fn set_base(&mut self, algo_name: &str, key: &str, value: &str) -> Result<(), CcError> {
        let algo = algo(algo_name).ok_or_else(|| CcError::UnknownAlgo(algo_name.to_string()))?;
        let i = match self.base.iter().position(|s| s.algo == algo) {
            Some(i) => i,
            None => {
                self.base.push(Setting::defaults(algo));
                self.base.len() - 1
            }
        };
        self.base[i].set(key, value)?;
        if self.global.algo == algo {
            self.global.set(key, value)?;
        }
        Ok(())
    }

    /// Sets a loop parameter of every base setting (and the global one).
    pub fn set_loop_base(&mut self, key: &str, value: &str) -> Result<(), CcError> {
        for s in self.base.iter_mut() {
            s.loop_params.set(key, value)?;
        }
        self.global.loop_params.set(key, value)
    }

    /// `cc set`: selects `algo_name` for a scope (global, or a listening
    /// port) and applies `kv`. Keeping the same algorithm changes only the
    /// given parameters; another algorithm starts from its base setting.
    /// Nothing changes when any key or value is bad.
    pub fn set(
        &mut self,
        port: Option<u16>,
        algo_name: &str,
        kv: &[(String, String)],
    ) -> Result<(), CcError> {
        let algo = algo(algo_name).ok_or_else(|| CcError::UnknownAlgo(algo_name.to_string()))?;
        if port == Some(0) {
            return Err(CcError::BadPort);
        }
        let current = match port {
            None => Some(&self.global),
            Some(p) => self.ports.get(&p),
        };
        let mut s = match current {
            Some(cur) if cur.algo == algo => cur.clone(),
            _ => self.base_of(algo),
        };
        for (k, v) in kv {
            s.set(k, v)?;
        }
        match port {
            None => self.global = s,
            Some(p) => {
                self.ports.insert(p, s);
            }
        }
        Ok(())
    }

    /// Removes a port's own setting (its flows follow the global one).
    pub fn unset(&mut self, port: u16) -> Result<(), CcError> {
        self.ports
            .remove(&port)
            .map(|_| ())
            .ok_or(CcError::NoPortSetting(port))
    }

    /// The setting for a flow: its listening port's, else the global one.
    #[inline]
    pub fn setting_for(&self, port: Option<u16>) -> &Setting {
        match port {
            Some(p) if !self.ports.is_empty() => self.ports.get(&p).unwrap_or(&self.global),
            _ => &self.global,
        }
    }
}

/// Algorithms and parameters, for help texts.
pub fn describe_algorithms() -> String {
    let mut s = String::new();
    for a in ALGORITHMS {
        s.push_str(&format!("  {:<11} {}\n", a.name, a.help));
        for p in a.params {
            s.push_str(&format!(
                "      {:<12} {:>9}  {}\n",
                p.name,
                fmt_value(p.unit, p.default),
                p.help
            ));
        }
    }
    s.push_str("  every algorithm also takes the control-loop parameters:\n");
    for p in LOOP_PARAMS {
        s.push_str(&format!(
            "      {:<12} {:>9}  {}\n",
            p.name,
            fmt_value(p.unit, p.default),
            p.help
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse_and_print_back() {
        assert_eq!(parse_value(Unit::Rate, "10mbps"), Ok(10_000.0));
        assert_eq!(parse_value(Unit::Rate, "10"), Ok(10_000.0));
        assert_eq!(parse_value(Unit::Rate, "1.5Gbps"), Ok(1_500_000.0));
        assert_eq!(parse_value(Unit::Rate, "500kbps"), Ok(500.0));
        assert_eq!(parse_value(Unit::Time, "30us"), Ok(30_000.0));
        assert_eq!(parse_value(Unit::Time, "30"), Ok(30_000.0));
        assert_eq!(parse_value(Unit::Time, "2ms"), Ok(2_000_000.0));
        assert_eq!(parse_value(Unit::Number, "0.8"), Ok(0.8));
        assert_eq!(parse_value(Unit::Number, "1e-3"), Ok(0.001));
        assert!(parse_value(Unit::Rate, "10 parsecs").is_err());
        assert!(parse_value(Unit::Time, "fast").is_err());
        assert!(parse_value(Unit::Number, "-1").is_err());
        for (u, v) in [
            (Unit::Rate, 10_000.0),
            (Unit::Rate, 1_250_000.0),
            (Unit::Rate, 64.0),
            (Unit::Time, 30_000.0),
            (Unit::Time, 10_000_000.0),
            (Unit::Time, 1.5e9),
            (Unit::Bytes, 65536.0),
            (Unit::Number, 0.0625),
        ] {
            assert_eq!(parse_value(u, &fmt_value(u, v)), Ok(v), "{u:?} {v}");
        }
    }

    #[test]
    fn limits_convert_between_rate_and_window() {
        // 10 Mbit/s over 100 µs = 125 bytes.
        assert_eq!(Limit::Rate(10_000).as_window(100, 0), 125);
        assert_eq!(Limit::Window(125_000).as_rate_kbps(100, 0), 10_000_000);
        assert_eq!(Limit::Rate(0).as_rate_kbps(100, 777), 777);
        assert_eq!(Limit::Window(0).as_window(100, 8_000), 100);
    }

    #[test]
    fn settings_scope_and_switch() {
        let mut c = CcConfig::default();
        assert_eq!(c.global.algo.name, "dctcp-rate");
        c.set_base("timely", "t_low", "40us").unwrap();
        // Switching starts from the base (with the command-line value).
        c.set(None, "timely", &[("beta".into(), "0.5".into())])
            .unwrap();
        assert_eq!(c.global.algo.name, "timely");
        let tl = c.global.params.index("t_low").unwrap();
        assert_eq!(c.global.params.get(tl), 40_000.0);
        let b = c.global.params.index("beta").unwrap();
        assert_eq!(c.global.params.get(b), 0.5);
        // Same algorithm: only the given key changes.
        c.set(None, "timely", &[("t-high".into(), "200us".into())])
            .unwrap();
        assert_eq!(c.global.params.get(b), 0.5);
        // Port scope.
        c.set(Some(80), "const-rate", &[("rate".into(), "1gbps".into())])
            .unwrap();
        assert_eq!(c.setting_for(Some(80)).algo.name, "const-rate");
        assert_eq!(c.setting_for(Some(81)).algo.name, "timely");
        assert_eq!(c.setting_for(None).algo.name, "timely");
        // Errors leave everything as it was.
        let before = c.clone();
        assert!(matches!(
            c.set(None, "reno", &[]),
            Err(CcError::UnknownAlgo(_))
        ));
        assert!(matches!(
            c.set(None, "timely", &[("beta".into(), "2".into())]),
            Err(CcError::BadValue { .. })
        ));
        assert!(matches!(
            c.set(None, "timely", &[("nope".into(), "2".into())]),
            Err(CcError::UnknownParamFor { .. })
        ));
        assert!(matches!(
            c.set(Some(0), "timely", &[]),
            Err(CcError::BadPort)
        ));
        assert_eq!(c, before);
        c.unset(80).unwrap();
        assert_eq!(c.unset(80), Err(CcError::NoPortSetting(80)));
        assert_eq!(c.setting_for(Some(80)).algo.name, "timely");
        // Loop parameters are part of every setting.
        c.set(None, "timely", &[("interval".into(), "4".into())])
            .unwrap();
        assert_eq!(c.global.interval_ns(50), 200_000);
        assert_eq!(c.global.interval_ns(1), 20_000, "floor: min_interval");
    }

    #[test]
    fn every_algorithm_has_sane_defaults_and_unique_names() {
        let mut names = std::collections::HashSet::new();
        for a in ALGORITHMS {
            assert!(names.insert(a.name));
            let mut pn = std::collections::HashSet::new();
            for p in a.params.iter().chain(LOOP_PARAMS) {
                assert!(pn.insert(p.name), "{}: duplicate {}", a.name, p.name);
                assert!(
                    p.min <= p.default && p.default <= p.max,
                    "{}.{}",
                    a.name,
                    p.name
                );
            }
            let f = (a.new_flow)(
                &Params::defaults(a.params),
                &Start {
                    mss: 1448,
                    ..Default::default()
                },
            );
            let _ = f.limit();
        }
        assert!(key_value("a=b").is_ok());
        assert!(key_value("a=").is_err());
        assert!(key_value("ab").is_err());
    }
}
