//! Progress and log events: the library reports through a [`Progress`]
//! callback. A [`Meter`] turns the stages' per-item events into `progress`
//! events with totals, percent and time left, at most [`RATE`] apart (the one
//! place progress is rate-limited). The binaries send the metered events to
//! a bar on a terminal ([`Bar`]), JSON Lines ([`JsonLines`]) or duplicity's
//! machine-readable log lines ([`DupLog`]); dup-records(5) documents the
//! JSON schema.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One event of a job. The JSON form is `{"event": "...", ...fields}`; the
/// schema is stable (dup-records(5)): fields may be added, none removed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A stage started.
    Start { stage: String },
    /// A tree item was processed (`bytes` of its content): sent by the one
    /// stage of a job that walks the tree (dup-delta in a backup, dup-get in
    /// a restore) for every item; a [`Meter`] sums them into `progress`.
    Item { path: String, bytes: u64 },
    /// What the job will process in all: `files` items, `bytes` of regular
    /// files (a backup's from a concurrent count of the tree: dup-scan
    /// --total; None for a restore, whose index has no sizes); `stage` is
    /// the stage that will process them.
    Total { stage: String, files: u64, bytes: Option<u64> },
    /// Where the job is (from a [`Meter`]).
    Progress(Counters),
    /// An archive file was stored, fetched or deleted.
    File { name: String, bytes: u64, action: String },
    /// An item was skipped; the job goes on.
    Warning { path: Option<String>, message: String },
    /// A message for the log, with duplicity's level and code.
    Log { level: Level, code: u32, message: String },
    /// A stage finished; `items` and `bytes` are its totals.
    Finish { stage: String, items: u64, bytes: u64 },
    /// A stage's statistics at its end (duplicity's statistics block).
    Summary(Summary),
}

impl Event {
    /// The level of the event in a log: a warning's, a message's own, a
    /// summary a notice (as duplicity's statistics), else info.
    pub fn level(&self) -> Level {
        match self {
            Event::Warning { .. } => Level::Warning,
            Event::Log { level, .. } => *level,
            Event::Summary(_) => Level::Notice,
            _ => Level::Info,
        }
    }
}

/// Counters of a `progress` event. Totals are null until known; `percent`
/// and `eta_seconds` too. `percent` never goes down and is 100 exactly once,
/// in the stage's last progress event.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counters {
    pub stage: String,
    pub files_done: u64,
    pub files_total: Option<u64>,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub percent: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub elapsed_seconds: f64,
    /// The item processed last.
    pub path: Option<String>,
}

/// duplicity's statistics, as far as a stage knows them (null: not this
/// stage's to say).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub stage: String,
    /// Items of the source (new, changed and unchanged).
    pub source_files: Option<u64>,
    pub new_files: Option<u64>,
    pub changed_files: Option<u64>,
    pub deleted_files: Option<u64>,
    /// Bytes of the source files read.
    pub bytes_read: Option<u64>,
    /// Bytes stored on the backend (duplicity's TotalDestinationSizeChange).
    pub bytes_stored: Option<u64>,
    /// Items skipped with a warning.
    pub errors: u64,
    pub elapsed_seconds: u64,
}

/// duplicity's message levels (log.py), lowercase in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Level {
    /// The name duplicity's --log-fd lines start with.
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warning => "WARNING",
            Level::Notice => "NOTICE",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }

    /// `error`, `warning`, `notice`, `info` or `debug`.
    pub fn parse(s: &str) -> Option<Level> {
        [Level::Error, Level::Warning, Level::Notice, Level::Info, Level::Debug]
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s))
    }

    pub fn from_log(l: log::Level) -> Level {
        match l {
            log::Level::Error => Level::Error,
            log::Level::Warn => Level::Warning,
            log::Level::Info => Level::Info,
            log::Level::Debug | log::Level::Trace => Level::Debug,
        }
    }
}

/// duplicity's codes (log.py InfoCode, WarningCode) that front ends read.
pub mod code {
    pub const GENERIC: u32 = 1;
    /// INFO: progress, "done total".
    pub const PROGRESS: u32 = 2;
    /// INFO: an archive file was stored.
    pub const UPLOAD_DONE: u32 = 13;
    /// WARNING: a source file could not be read.
    pub const CANNOT_READ: u32 = 10;
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

/// The shortest time between two `progress` events of a [`Meter`] (about
/// ten a second).
pub const RATE: Duration = Duration::from_millis(100);

/// Sums `item` events into rate-limited `progress` events for `inner` (the
/// items themselves are not passed on; every other event is). The metered
/// stage is the one that started last before the first item; its `finish`
/// sends the last progress event, at 100 %.
pub struct Meter<P: Progress> {
    inner: P,
    state: Mutex<MeterState>,
}

struct MeterState {
    start: Instant,
    last: Option<Instant>,
    started: Option<String>,
    c: Counters,
    finished: bool,
}

impl<P: Progress> Meter<P> {
    pub fn new(inner: P) -> Self {
        Meter {
            inner,
            state: Mutex::new(MeterState {
                start: Instant::now(),
                last: None,
                started: None,
                c: Counters::default(),
                finished: false,
            }),
        }
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl MeterState {
    /// The counters as of now; `last`: the stage's final event.
    fn snapshot(&mut self, last: bool) -> Counters {
        let elapsed = self.start.elapsed().as_secs_f64();
        let mut c = self.c.clone();
        c.elapsed_seconds = elapsed;
        if last {
            c.files_total = Some(c.files_done);
            c.bytes_total = Some(c.bytes_done);
            c.percent = Some(100.0);
            c.eta_seconds = Some(0.0);
        } else if let Some(f) = fraction(&c) {
            // Below 100 until the stage says it is done; never down.
            let p = (f * 100.0).min(99.9).max(self.c.percent.unwrap_or(0.0));
            c.percent = Some((p * 10.0).floor() / 10.0);
            c.eta_seconds = (f > 0.0).then(|| (elapsed * (1.0 - f) / f).max(0.0).round());
        }
        self.c.percent = c.percent;
        c
    }
}

/// How far along: by bytes when there are bytes to process, else by items.
fn fraction(c: &Counters) -> Option<f64> {
    match (c.bytes_total, c.files_total) {
        (Some(b), _) if b > 0 => Some((c.bytes_done as f64 / b as f64).min(1.0)),
        (_, Some(f)) if f > 0 => Some((c.files_done as f64 / f as f64).min(1.0)),
        (Some(_), Some(_)) => Some(1.0),
        _ => None,
    }
}

impl<P: Progress> Progress for Meter<P> {
    fn event(&self, ev: Event) {
        let Ok(mut s) = self.state.lock() else { return };
        match ev {
            Event::Start { ref stage } => {
                s.started = Some(stage.clone());
                drop(s);
                self.inner.event(ev);
            }
            Event::Total { files, bytes, .. } => {
                s.c.files_total = Some(files);
                s.c.bytes_total = bytes;
                drop(s);
                self.inner.event(ev);
            }
            Event::Item { path, bytes } => {
                if s.finished {
                    return;
                }
                if s.c.stage.is_empty() {
                    s.c.stage = s.started.clone().unwrap_or_default();
                }
                s.c.files_done += 1;
                s.c.bytes_done += bytes;
                s.c.path = Some(path);
                let now = Instant::now();
                if s.last.is_some_and(|t| now.duration_since(t) < RATE) {
                    return;
                }
                s.last = Some(now);
                let c = s.snapshot(false);
                drop(s);
                self.inner.event(Event::Progress(c));
            }
            Event::Finish { ref stage, .. } => {
                let last = (!s.finished && *stage == s.c.stage).then(|| {
                    s.finished = true;
                    s.snapshot(true)
                });
                drop(s);
                if let Some(c) = last {
                    self.inner.event(Event::Progress(c));
                }
                self.inner.event(ev);
            }
            ev => {
                drop(s);
                self.inner.event(ev);
            }
        }
    }
}

/// Sends every event to each of its sinks.
pub struct Fanout(pub Vec<Box<dyn Progress + Send>>);

impl Progress for Fanout {
    fn event(&self, ev: Event) {
        if let Some((last, rest)) = self.0.split_last() {
            for p in rest {
                p.event(ev.clone());
            }
            last.event(ev);
        }
    }
}

/// Writes each event (but `item`: see [`Meter`]) as a JSON line, each in one
/// write (lines from several processes on one pipe do not mix).
pub struct JsonLines<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> JsonLines<W> {
    pub fn new(out: W) -> Self {
        JsonLines { out: Mutex::new(out) }
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl<W: Write + Send> Progress for JsonLines<W> {
    fn event(&self, ev: Event) {
        if matches!(ev, Event::Item { .. }) {
            return;
        }
        let Ok(mut out) = self.out.lock() else { return };
        if let Ok(mut line) = serde_json::to_vec(&ev) {
            line.push(b'\n');
            let _ = out.write_all(&line);
            let _ = out.flush();
        }
    }
}

/// Writes events as duplicity's --log-fd messages (log.py's
/// MachineFormatter): a line "LEVEL CODE[ EXTRA]", the text with each line
/// prefixed by ". ", then an empty line; each message in one write.
pub struct DupLog<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> DupLog<W> {
    pub fn new(out: W) -> Self {
        DupLog { out: Mutex::new(out) }
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// One message in duplicity's machine-readable form.
pub fn dup_log_message(level: Level, code: u32, extra: Option<&str>, text: &str) -> String {
    let mut s = format!("{} {code}", level.name());
    if let Some(x) = extra {
        s.push(' ');
        s.push_str(x);
    }
    if !text.is_empty() {
        for line in text.split('\n') {
            s.push_str("\n. ");
            s.push_str(line);
        }
    }
    s.push_str("\n\n");
    s
}

/// A path as duplicity's util.escape quotes it in a control line.
fn quoted(p: &str) -> String {
    let mut s = String::with_capacity(p.len() + 2);
    s.push('\'');
    for c in p.chars() {
        match c {
            '\'' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            c if c.is_control() => s.push_str(&c.escape_default().to_string()),
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

impl<W: Write + Send> Progress for DupLog<W> {
    fn event(&self, ev: Event) {
        let msg = match &ev {
            Event::Log { level, code, message } => dup_log_message(*level, *code, None, message),
            Event::Warning { path: Some(p), message } => {
                dup_log_message(Level::Warning, code::CANNOT_READ, Some(&quoted(p)), &format!("{p}: {message}"))
            }
            Event::Warning { path: None, message } => dup_log_message(Level::Warning, code::GENERIC, None, message),
            Event::Progress(c) => {
                let extra = match c.bytes_total {
                    Some(t) => format!("{} {t}", c.bytes_done),
                    None => c.bytes_done.to_string(),
                };
                dup_log_message(Level::Info, code::PROGRESS, Some(&extra), &line(c, usize::MAX))
            }
            Event::File { name, bytes, action } => {
                let code = if action == "stored" { code::UPLOAD_DONE } else { code::GENERIC };
                dup_log_message(Level::Info, code, Some(&quoted(name)), &format!("{action} {name} ({bytes} bytes)"))
            }
            Event::Summary(s) => dup_log_message(Level::Notice, code::GENERIC, None, &s.to_string()),
            Event::Finish { stage, items, bytes } => dup_log_message(
                Level::Info,
                code::GENERIC,
                None,
                &format!("{stage}: {items} items, {}", human_bytes(*bytes)),
            ),
            Event::Start { .. } | Event::Item { .. } | Event::Total { .. } => return,
        };
        let Ok(mut out) = self.out.lock() else { return };
        let _ = out.write_all(msg.as_bytes());
        let _ = out.flush();
    }
}

impl std::fmt::Display for Summary {
    /// One line (the wrapper's statistics block reads it): "delta: 3 new,
    /// 1 changed, 0 deleted, 12 source files, 4096 bytes read, 0 errors, 2 s";
    /// "put: 1234 bytes stored, 0 errors, 1 s".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        let mut push = |v: Option<u64>, what: &str| {
            if let Some(v) = v {
                parts.push(format!("{v} {what}"));
            }
        };
        push(self.new_files, "new");
        push(self.changed_files, "changed");
        push(self.deleted_files, "deleted");
        push(self.source_files, "source files");
        push(self.bytes_read, "bytes read");
        push(self.bytes_stored, "bytes stored");
        parts.push(format!("{} errors", self.errors));
        parts.push(format!("{} s", self.elapsed_seconds));
        write!(f, "{}: {}", self.stage, parts.join(", "))
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

/// Seconds for people: 42s, 3m07s, 2h05m.
pub fn human_seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The progress line of `c`, at most `width` characters: percent, items,
/// bytes, time left and rate, then as much of the current path (its end) as
/// fits; the parts at the end are left out first.
pub fn line(c: &Counters, width: usize) -> String {
    let mut parts = Vec::new();
    if let Some(p) = c.percent {
        // Down: 99.9 is not done.
        parts.push(format!("{}%", p.floor() as u64));
    }
    parts.push(match c.files_total {
        Some(t) => format!("{}/{t} items", c.files_done),
        None => format!("{} items", c.files_done),
    });
    parts.push(match c.bytes_total {
        Some(t) => format!("{}/{}", human_bytes(c.bytes_done), human_bytes(t)),
        None => human_bytes(c.bytes_done),
    });
    if let Some(e) = c.eta_seconds {
        parts.push(format!("ETA {}", human_seconds(e)));
    }
    if c.elapsed_seconds > 0.0 {
        parts.push(format!("{}/s", human_bytes((c.bytes_done as f64 / c.elapsed_seconds) as u64)));
    }
    let mut s = String::new();
    for p in parts {
        let sep = usize::from(!s.is_empty());
        if s.chars().count() + sep + p.chars().count() > width {
            break;
        }
        if sep == 1 {
            s.push(' ');
        }
        s.push_str(&p);
    }
    if let Some(path) = &c.path {
        let room = width.saturating_sub(s.chars().count() + 1);
        let n = path.chars().count();
        if room >= 8 && width != usize::MAX {
            s.push(' ');
            if n <= room {
                s.push_str(path);
            } else {
                s.push('…');
                s.extend(path.chars().skip(n - (room - 1)));
            }
        } else if width == usize::MAX {
            s.push(' ');
            s.push_str(path);
        }
    }
    if s.chars().count() > width {
        s = s.chars().take(width).collect();
    }
    s
}

/// Set while a passphrase is asked on the terminal: a [`Bar`] draws nothing
/// then, and starts a fresh line after, so a prompt is never drawn over.
pub static PROMPTING: AtomicBool = AtomicBool::new(false);

/// Set while a [`Bar`]'s line is the terminal's current line.
static DRAWN: AtomicBool = AtomicBool::new(false);

/// Whether a bar's line is the current line (and it is left there): a
/// prompt then starts on a line of its own.
pub fn leave_bar_line() -> bool {
    DRAWN.swap(false, Ordering::Relaxed)
}

/// One line on a terminal (stderr) for `progress` events, as wide as the
/// terminal less one column (no wrapping); messages are printed above it.
pub struct Bar {
    state: Mutex<BarState>,
}

struct BarState {
    /// The last line drawn, if it is on the screen.
    shown: Option<String>,
    width: usize,
}

impl Bar {
    pub fn new(width: usize) -> Bar {
        Bar { state: Mutex::new(BarState { shown: None, width }) }
    }

    /// A bar as wide as stderr's terminal ($COLUMNS, else the terminal's
    /// size, else 80).
    pub fn for_stderr() -> Bar {
        Bar::new(terminal_width())
    }

    /// Prints a message line above the bar (which is drawn again after it).
    pub fn message(&self, text: &str) {
        let Ok(mut s) = self.state.lock() else { return };
        let mut err = std::io::stderr().lock();
        let redraw = s.shown.take();
        let prompting = PROMPTING.load(Ordering::Relaxed);
        // Over the bar's line; below a prompt's, which stays.
        let clear = match (prompting, redraw.is_some()) {
            (true, _) => "\n",
            (false, true) => "\r\x1b[K",
            (false, false) => "",
        };
        let _ = writeln!(err, "{clear}{text}");
        DRAWN.store(false, Ordering::Relaxed);
        if let Some(l) = redraw.filter(|_| !prompting) {
            let _ = write!(err, "{l}");
            s.shown = Some(l);
            DRAWN.store(true, Ordering::Relaxed);
        }
        let _ = err.flush();
    }

    /// Leaves the bar's last line on the screen and moves below it.
    pub fn end(&self) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.shown.take().is_some() && leave_bar_line() {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// stderr's terminal width: $COLUMNS, else the terminal's, else 80.
pub fn terminal_width() -> usize {
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<usize>().ok()).filter(|&c| c > 0) {
        return c;
    }
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it for a terminal.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: see above; fd 2 is only inspected.
    if unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
        return ws.ws_col as usize;
    }
    80
}

impl Progress for Bar {
    fn event(&self, ev: Event) {
        match ev {
            Event::Progress(c) => {
                let Ok(mut s) = self.state.lock() else { return };
                if PROMPTING.load(Ordering::Relaxed) {
                    // A prompt is on the current line: leave it, and start
                    // on a fresh line next time.
                    s.shown = None;
                    return;
                }
                let l = line(&c, s.width.saturating_sub(1).max(1));
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[K{l}");
                let _ = err.flush();
                s.shown = Some(l);
                DRAWN.store(true, Ordering::Relaxed);
            }
            Event::Warning { path, message } => {
                self.message(&format!("warning: {}{message}", path.map(|p| format!("{p}: ")).unwrap_or_default()))
            }
            Event::Finish { .. } => self.end(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect() -> (std::sync::Arc<Mutex<Vec<Event>>>, impl Progress + Send) {
        let v = std::sync::Arc::new(Mutex::new(Vec::new()));
        let w = v.clone();
        (v, move |e: Event| w.lock().unwrap().push(e))
    }

    #[test]
    fn meter_rate_limits_and_ends_at_100_once() {
        let (seen, sink) = collect();
        let m = Meter::new(sink);
        m.event(Event::Start { stage: "delta".into() });
        m.event(Event::Total { stage: "scan".into(), files: 1000, bytes: Some(1000) });
        for i in 0..1000 {
            m.event(Event::Item { path: format!("f{i}"), bytes: 1 });
        }
        m.event(Event::Finish { stage: "delta".into(), items: 1000, bytes: 1000 });
        m.event(Event::Finish { stage: "delta".into(), items: 1000, bytes: 1000 });
        let seen = seen.lock().unwrap();
        let progress: Vec<&Counters> =
            seen.iter().filter_map(|e| if let Event::Progress(c) = e { Some(c) } else { None }).collect();
        assert!(progress.len() < 5, "{}", progress.len());
        assert_eq!(progress.iter().filter(|c| c.percent == Some(100.0)).count(), 1);
        let last = progress.last().unwrap();
        assert_eq!((last.files_done, last.bytes_done, last.stage.as_str()), (1000, 1000, "delta"));
        assert!(!seen.iter().any(|e| matches!(e, Event::Item { .. })));
    }

    #[test]
    fn percent_never_reaches_100_before_the_end_nor_goes_down() {
        let (seen, sink) = collect();
        let m = Meter::new(sink);
        m.event(Event::Start { stage: "delta".into() });
        m.event(Event::Total { stage: "delta".into(), files: 2, bytes: Some(10) });
        m.event(Event::Item { path: "a".into(), bytes: 20 });
        std::thread::sleep(RATE);
        m.event(Event::Total { stage: "delta".into(), files: 4, bytes: Some(40) });
        m.event(Event::Item { path: "b".into(), bytes: 1 });
        let seen = seen.lock().unwrap();
        let p: Vec<f64> =
            seen.iter().filter_map(|e| if let Event::Progress(c) = e { c.percent } else { None }).collect();
        assert_eq!(p, vec![99.9, 99.9]);
    }

    #[test]
    fn dup_log_lines_as_duplicity_writes_them() {
        assert_eq!(dup_log_message(Level::Warning, 2, None, "one\ntwo"), "WARNING 2\n. one\n. two\n\n");
        assert_eq!(dup_log_message(Level::Notice, 1, None, ""), "NOTICE 1\n\n");
        let log = DupLog::new(Vec::new());
        log.event(Event::Log { level: Level::Info, code: 1, message: "hello".into() });
        log.event(Event::Warning { path: Some("a b/it's".into()), message: "cannot read".into() });
        log.event(Event::Log { level: Level::Error, code: 12, message: "bad\nhint: x".into() });
        log.event(Event::Item { path: "x".into(), bytes: 1 });
        let out = String::from_utf8(log.into_inner()).unwrap();
        assert_eq!(
            out,
            "INFO 1\n. hello\n\nWARNING 10 'a b/it\\'s'\n. a b/it's: cannot read\n\nERROR 12\n. bad\n. hint: x\n\n"
        );
    }

    #[test]
    fn json_lines_skip_items() {
        let j = JsonLines::new(Vec::new());
        j.event(Event::Item { path: "x".into(), bytes: 1 });
        j.event(Event::Progress(Counters { stage: "delta".into(), files_done: 1, ..Default::default() }));
        let out = String::from_utf8(j.into_inner()).unwrap();
        assert_eq!(out.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["event"], "progress");
        assert_eq!(v["files_total"], serde_json::Value::Null);
        assert_eq!(v["files_done"], 1);
    }

    #[test]
    fn the_line_fits_60_columns() {
        let c = Counters {
            stage: "delta".into(),
            files_done: 123_456,
            files_total: Some(1_234_567),
            bytes_done: 300 << 20,
            bytes_total: Some(3 << 30),
            percent: Some(9.7),
            eta_seconds: Some(3725.0),
            elapsed_seconds: 12.0,
            path: Some("home/someone/a/very/long/directory/name/with/a/file-at-the-end.txt".into()),
        };
        let l = line(&c, 59);
        assert!(l.chars().count() <= 59, "{l}");
        assert_eq!(l, "9% 123456/1234567 items 300.0 MiB/3.0 GiB ETA 1h02m");
        assert_eq!(line(&c, 75), "9% 123456/1234567 items 300.0 MiB/3.0 GiB ETA 1h02m 25.0 MiB/s …the-end.txt");
        let wide = line(&c, 200);
        assert!(
            wide.ends_with(" 25.0 MiB/s home/someone/a/very/long/directory/name/with/a/file-at-the-end.txt"),
            "{wide}"
        );
        // Narrow: the parts at the end go first, never past the width.
        for w in [1, 5, 20, 40] {
            assert!(line(&c, w).chars().count() <= w, "{w}: {}", line(&c, w));
        }
        assert_eq!(line(&c, 20), "9% …e-at-the-end.txt");
        // Unknown totals: counts alone.
        let u = Counters { files_done: 3, bytes_done: 2048, ..Default::default() };
        assert_eq!(line(&u, 59), "3 items 2.0 KiB");
        let almost = Counters { percent: Some(99.9), ..u };
        assert!(line(&almost, 59).starts_with("99% "));
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_seconds(3725.0), "1h02m");
        assert_eq!(human_seconds(187.0), "3m07s");
    }
}
