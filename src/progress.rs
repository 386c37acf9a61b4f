//! Progress and log events: the library reports through a [`Progress`]
//! callback; binaries show a bar on a terminal, or write the events as JSON
//! Lines (on stderr with `--progress`, or on `--log-fd N`).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One event of a job.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A stage started.
    Start { stage: String },
    /// A tree item was processed (`bytes` of its content read or written).
    Item { path: String, bytes: u64 },
    /// An archive file was stored, fetched or deleted.
    File { name: String, bytes: u64, action: String },
    /// Something was skipped; the job goes on.
    Warning { path: Option<String>, message: String },
    /// A stage finished; `items` and `bytes` are its totals.
    Finish { stage: String, items: u64, bytes: u64 },
}

/// Receives events; implementations must be cheap (called per file).
pub trait Progress: Sync {
    fn event(&self, ev: Event);
}

/// Ignores every event.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event) {}
}

impl<F: Fn(Event) + Sync> Progress for F {
    fn event(&self, ev: Event) {
        self(ev)
    }
}

/// Writes events as JSON Lines; `item` events at most a few per second.
pub struct JsonEvents<W: Write + Send> {
    out: Mutex<(W, Option<Instant>)>,
}

impl<W: Write + Send> JsonEvents<W> {
    pub fn new(out: W) -> Self {
        JsonEvents { out: Mutex::new((out, None)) }
    }
}

const ITEM_INTERVAL: Duration = Duration::from_millis(250);

impl<W: Write + Send> Progress for JsonEvents<W> {
    fn event(&self, ev: Event) {
        let Ok(mut g) = self.out.lock() else { return };
        if let Event::Item { .. } = ev {
            let now = Instant::now();
            if g.1.is_some_and(|t| now.duration_since(t) < ITEM_INTERVAL) {
                return;
            }
            g.1 = Some(now);
        }
        if let Ok(mut line) = serde_json::to_vec(&ev) {
            line.push(b'\n');
            let _ = g.0.write_all(&line);
            let _ = g.0.flush();
        }
    }
}

/// A one-line bar on a terminal (stderr): items, bytes, rate, current path.
pub struct Bar {
    state: Mutex<BarState>,
}

struct BarState {
    start: Instant,
    last: Option<Instant>,
    items: u64,
    bytes: u64,
}

impl Default for Bar {
    fn default() -> Self {
        Bar { state: Mutex::new(BarState { start: Instant::now(), last: None, items: 0, bytes: 0 }) }
    }
}

/// Bytes for people: 1.5 MiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

impl Progress for Bar {
    fn event(&self, ev: Event) {
        let Ok(mut s) = self.state.lock() else { return };
        let mut err = std::io::stderr().lock();
        match ev {
            Event::Item { path, bytes } => {
                s.items += 1;
                s.bytes += bytes;
                let now = Instant::now();
                if s.last.is_some_and(|t| now.duration_since(t) < Duration::from_millis(100)) {
                    return;
                }
                s.last = Some(now);
                let secs = now.duration_since(s.start).as_secs_f64().max(0.001);
                let mut p: String = path.chars().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
                if p.len() < path.len() {
                    p.insert(0, '…');
                }
                let _ = write!(
                    err,
                    "\r\x1b[K{} items  {}  {}/s  {p}",
                    s.items,
                    human_bytes(s.bytes),
                    human_bytes((s.bytes as f64 / secs) as u64)
                );
            }
            Event::Warning { path, message } => {
                let _ =
                    writeln!(err, "\r\x1b[Kwarning: {}{message}", path.map(|p| format!("{p}: ")).unwrap_or_default());
            }
            Event::Finish { stage, items, bytes } => {
                let secs = s.start.elapsed().as_secs_f64();
                let _ = writeln!(err, "\r\x1b[K{stage}: {items} items, {} in {secs:.1} s", human_bytes(bytes));
            }
            Event::Start { .. } | Event::File { .. } => {}
        }
    }
}

/// The progress a binary shows: `--log-fd N` → JSON events on fd N;
/// `--progress` → a bar on a terminal, JSON events on stderr otherwise;
/// neither → a bar when stderr is a terminal, else nothing.
pub fn for_cli(progress: bool, log_fd: Option<i32>) -> crate::Result<Box<dyn Progress>> {
    use std::os::fd::FromRawFd;
    if let Some(fd) = log_fd {
        if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(crate::Error::usage(format!("--log-fd {fd}: not an open file descriptor (3 or more)")));
        }
        // SAFETY: the descriptor is open (checked above) and handed to us for this purpose.
        let f = unsafe { std::fs::File::from_raw_fd(fd) };
        return Ok(Box::new(JsonEvents::new(f)));
    }
    let tty = std::io::stderr().is_terminal();
    Ok(match (progress, tty) {
        (_, true) => Box::new(Bar::default()),
        (true, false) => Box::new(JsonEvents::new(std::io::stderr())),
        (false, false) => Box::new(Silent),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_events_are_rate_limited() {
        let ev = JsonEvents::new(Vec::new());
        ev.event(Event::Start { stage: "scan".into() });
        for i in 0..1000 {
            ev.event(Event::Item { path: format!("f{i}"), bytes: 1 });
        }
        ev.event(Event::Finish { stage: "scan".into(), items: 1000, bytes: 1000 });
        let out = String::from_utf8(ev.out.into_inner().unwrap().0).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.len() < 10, "{}", lines.len());
        assert!(lines[0].contains(r#""event":"start""#));
        assert!(lines.last().unwrap().contains(r#""items":1000"#));
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
