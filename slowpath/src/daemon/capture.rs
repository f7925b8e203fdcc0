//! The daemon's side of `tasctl capture`: one capture session at a time
//! over every lane's [`Capture`](tas_runtime::capture::Capture), read in
//! batches by the client, stopped when the client stops reading.

use super::Shared;
use crate::ctlsock::{CaptureBatch, CaptureStarted, CapturedFrame, CAPTURE_IDLE_STOP};
use std::fmt::Write as _;
use std::time::Instant;
use tas_runtime::capture::{Dir, CAPTURE_SLOTS, CAPTURE_SNAP_MAX};

/// Most frames one read returns (the rest wait in the lanes' buffers).
const FRAMES_PER_READ: usize = 2048;

/// A running capture.
pub(super) struct Session {
    id: u64,
    last_read: Instant,
    /// Wall clock minus `now_ns()` at the start: turns the lanes'
    /// monotonic times into pcap times.
    wall_offset_ns: i128,
}

/// The capture sessions of the daemon (at most one runs).
#[derive(Default)]
pub(super) struct Captures {
    running: Option<Session>,
    next_id: u64,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum CaptureError {
    #[error("capture: another capture is running (one at a time; it ends when its tasctl stops reading)")]
    Busy,
    #[error("capture: snap length must be 64..={CAPTURE_SNAP_MAX} bytes")]
    SnapLen,
    #[error("capture: no capture {0} is running")]
    NotRunning(u64),
    #[error("capture: --port must be 1..65535")]
    Port,
}

fn wall_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

impl Captures {
    pub(super) fn start(
        &mut self,
        shared: &Shared,
        port: Option<u16>,
        snaplen: u32,
    ) -> Result<CaptureStarted, CaptureError> {
        if self.running.is_some() {
            return Err(CaptureError::Busy);
        }
        if !(64..=CAPTURE_SNAP_MAX).contains(&snaplen) {
            return Err(CaptureError::SnapLen);
        }
        if port == Some(0) {
            return Err(CaptureError::Port);
        }
        for l in &shared.lanes {
            l.capture.start(port.unwrap_or(0), snaplen);
        }
        self.next_id += 1;
        self.running = Some(Session {
            id: self.next_id,
            last_read: Instant::now(),
            wall_offset_ns: wall_ns() - tas_runtime::now_ns() as i128,
        });
        tracing::info!(
            "capture {} started (port {}, snap length {snaplen}, {} frames buffered per lane)",
            self.next_id,
            port.map_or("any".to_string(), |p| p.to_string()),
            CAPTURE_SLOTS
        );
        Ok(CaptureStarted {
            id: self.next_id,
            snaplen,
            lanes: shared.lanes.len() as u32,
        })
    }

    /// The frames captured since the last read; `stop` ends the capture
    /// after taking them.
    pub(super) fn read(
        &mut self,
        shared: &Shared,
        id: u64,
        stop: bool,
    ) -> Result<CaptureBatch, CaptureError> {
        let s = match &mut self.running {
            Some(s) if s.id == id => s,
            _ => return Err(CaptureError::NotRunning(id)),
        };
        s.last_read = Instant::now();
        let off = s.wall_offset_ns;
        let mut frames = Vec::new();
        let mut dropped = 0;
        for l in &shared.lanes {
            l.capture.take(FRAMES_PER_READ - frames.len(), |c| {
                let mut hex = String::with_capacity(c.data.len() * 2);
                for b in &c.data {
                    let _ = write!(hex, "{b:02x}");
                }
                frames.push(CapturedFrame {
                    t_ns: (c.t_ns as i128 + off).max(0) as u64,
                    rx: c.dir == Dir::Rx,
                    len: c.orig_len,
                    data: hex,
                });
            });
            dropped += l.capture.dropped.load(std::sync::atomic::Ordering::Relaxed);
        }
        frames.sort_by_key(|f| f.t_ns);
        if stop {
            self.stop(shared);
        }
        Ok(CaptureBatch {
            frames,
            dropped,
            running: !stop,
        })
    }

    fn stop(&mut self, shared: &Shared) {
        if let Some(s) = self.running.take() {
            for l in &shared.lanes {
                l.capture.stop();
            }
            tracing::info!("capture {} stopped", s.id);
        }
    }

    /// Stops a capture nobody has read for [`CAPTURE_IDLE_STOP`].
    pub(super) fn expire(&mut self, shared: &Shared) {
        if self
            .running
            .as_ref()
            .is_some_and(|s| s.last_read.elapsed() > CAPTURE_IDLE_STOP)
        {
            tracing::info!("capture not read for {CAPTURE_IDLE_STOP:?}; stopping it");
            self.stop(shared);
        }
    }
}
