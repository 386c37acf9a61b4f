//! dup-ls: list an archive's sets or the files at a time; or show a record stream.

use std::io::{self, BufWriter, IsTerminal, Write};

use argh::FromArgs;
use dup::cli::{self, Status};
use dup::dupfmt::time;
use dup::error::{Error, Result};
use dup::record::{self, Encoding, Record, StreamHead, StreamKind};
use dup::stage::ls::retention::{self, Policy};
use dup::stage::ls::{status, table};

dup::args_with_log_options! {
archive_keys;
/// List the backup sets of the archive at URL (collection status), or with
/// --files the files present at a time, read from the signatures alone (no
/// volume is downloaded). With no URL, read any dup record stream on standard
/// input and show it. Output: a table on a terminal or with --table, JSON
/// Lines with --json, CBOR records otherwise (with a URL); a stream read on
/// standard input is shown as a table unless --json.
#[derive(FromArgs)]
struct Args {
    /// write JSON Lines
    #[argh(switch)]
    json: bool,
    /// write a table for people even when standard output is not a terminal
    #[argh(switch)]
    table: bool,
    /// list the files present at --time instead of the sets
    #[argh(switch)]
    files: bool,
    /// with --files: the time, in duplicity's time syntax (default: now)
    #[argh(option)]
    time: Option<String>,
    /// select for deletion the chains older than this time (never the newest chain, nor a set a kept set depends on)
    #[argh(option)]
    remove_older_than: Option<String>,
    /// select for deletion all chains but the N newest
    #[argh(option)]
    remove_all_but_n_full: Option<usize>,
    /// select for deletion the incrementals of all chains but the N newest (their fulls are kept)
    #[argh(option)]
    remove_all_inc_of_but_n_full: Option<usize>,
    /// select for deletion orphaned and incomplete sets and orphaned signatures
    #[argh(switch)]
    cleanup: bool,
    /// test the connection to URL instead (list, then write, read back and delete a small file; no retries, 5 s at most per request; a missing directory is not_found, never created) and print the answer as a check record; the exit code tells it too
    #[argh(switch)]
    check: bool,
    /// archive URL (file:///path ...); omit to read a stream from standard input
    #[argh(positional)]
    url: Option<String>,
}
}

fn main() {
    let args: Args = cli::args("dup-ls");
    cli::main("dup-ls", || {
        cli::output(&args.output_args(false))?;
        match &args.url {
            None => render(args.json),
            Some(url) if args.check => check(&args, url),
            Some(url) => list(&args, url),
        }
    })
}

fn put(out: &mut impl Write, line: &[u8]) -> Result<()> {
    out.write_all(line).and_then(|_| out.write_all(b"\n")).map_err(|e| Error::io("writing to standard output", e))
}

/// The retention command asked for, if any (at most one).
fn policy(args: &Args) -> Result<Option<Policy>> {
    let mut p = Vec::new();
    if let Some(t) = &args.remove_older_than {
        p.push(Policy::OlderThan(time::parse_time(t, time::now())?));
    }
    if let Some(n) = args.remove_all_but_n_full {
        p.push(Policy::AllButNFull(n));
    }
    if let Some(n) = args.remove_all_inc_of_but_n_full {
        p.push(Policy::AllIncOfButNFull(n));
    }
    if args.cleanup {
        p.push(Policy::Cleanup);
    }
    if p.len() > 1 || (!p.is_empty() && args.files) {
        return Err(Error::usage(
            "give one of --files, --remove-older-than, --remove-all-but-n-full, --remove-all-inc-of-but-n-full, --cleanup",
        ));
    }
    if matches!(p.first(), Some(Policy::AllButNFull(0)) | Some(Policy::AllIncOfButNFull(0))) {
        return Err(Error::usage("N must be at least 1"));
    }
    Ok(p.pop())
}

/// The connection test: one `check` record (a line in a table), and the
/// exit code of its answer (error.rs: 14 unreachable, 15 auth refused, 16
/// permission denied, 17 not found, 1 other).
fn check(args: &Args, url: &str) -> Result<Status> {
    if args.files || args.time.is_some() || policy(args)?.is_some() {
        return Err(Error::usage("--check takes no other command"));
    }
    let c = dup::archive::test_connection(url)?;
    if !args.json && (args.table || io::stdout().is_terminal()) {
        let mut out = cli::stdout();
        put(&mut out, table::check_line(&c).as_bytes())?;
        out.flush().map_err(|e| Error::io("writing to standard output", e))?;
    } else {
        let mut w = cli::stdout_records(args.json, StreamKind::Listing, "dup-ls")?;
        w.write(&Record::Check(c.clone()))?;
        w.finish()?;
    }
    if c.is_ok() {
        return Ok(Status::Ok);
    }
    let e = Error::new(c.error_kind(), format!("{}: {}", c.url, c.message));
    Err(match c.hint {
        Some(h) => e.hint(h),
        None => e,
    })
}

fn list(args: &Args, url: &str) -> Result<Status> {
    if args.time.is_some() && !args.files {
        return Err(Error::usage("--time applies to --files"));
    }
    let a = args.archive_args(url).open()?;
    let coll = a.collection()?;
    for w in &coll.warnings {
        log::warn!("{w}");
    }
    let table = !args.json && (args.table || io::stdout().is_terminal());
    let mut out = cli::stdout();
    if let Some(policy) = policy(args)? {
        let plan = retention::plan(&coll, policy);
        for n in &plan.notes {
            log::warn!("{n}");
        }
        if table {
            for r in &plan.deletes {
                put(&mut out, table::line(r, None).as_bytes())?;
            }
            out.flush().map_err(|e| Error::io("writing to standard output", e))?;
            return Ok(Status::Ok);
        }
        let mut w = cli::stdout_records(args.json, StreamKind::Files, "dup-ls")?;
        for r in &plan.deletes {
            w.write(r)?;
        }
        w.finish()?;
        return Ok(Status::Ok);
    }
    if args.files {
        let t = args.time.as_deref().map(|s| time::parse_time(s, time::now())).transpose()?;
        let mut state = dup::stage::ls::files::Files::at(&coll, t, &a)?;
        if table {
            while let Some(e) = state.next()? {
                let mut line = time::pretty(e.mtime).into_bytes();
                line.push(b' ');
                line.extend_from_slice(&terminal_safe(&e.path));
                put(&mut out, &line)?;
            }
            out.flush().map_err(|e| Error::io("writing to standard output", e))?;
            return Ok(Status::Ok);
        }
        let mut w = cli::stdout_records(args.json, StreamKind::Listing, "dup-ls")?;
        while let Some(e) = state.next()? {
            w.write(&Record::Entry(e))?;
        }
        w.finish()?;
        return Ok(Status::Ok);
    }
    let sets = status::sets(&coll);
    if sets.is_empty() {
        return Err(Error::new(dup::Kind::NoBackup, format!("no backup sets found at {url}")));
    }
    if table {
        for s in &sets {
            put(&mut out, table::set_line(s).as_bytes())?;
        }
        for n in coll.local_orphaned_sigs.iter().chain(&coll.remote_orphaned_sigs) {
            put(&mut out, format!("orphaned signature file: {n}").as_bytes())?;
        }
        out.flush().map_err(|e| Error::io("writing to standard output", e))?;
        return Ok(Status::Ok);
    }
    let mut w = cli::stdout_records(args.json, StreamKind::Listing, "dup-ls")?;
    for s in sets {
        w.write(&Record::Set(s))?;
    }
    w.finish()?;
    Ok(Status::Ok)
}

/// Renders standard input: records as a table, or re-encoded as JSON Lines.
fn render(json: bool) -> Result<Status> {
    let mut input = cli::stdin_records()?;
    if json {
        let mut w = record::Writer::with_head(cli::stdout(), Encoding::Json, input.head().clone())?;
        while let Some(rec) = input.next()? {
            w.write(&rec)?;
        }
        w.finish()?;
        return Ok(Status::Ok);
    }
    let mut out = BufWriter::new(io::stdout());
    let StreamHead { stream, producer, source, basis_time, passphrase_check } = input.head().clone();
    let head = Record::Header { stream, version: record::VERSION, producer, source, basis_time, passphrase_check };
    put(&mut out, table::line(&head, None).as_bytes())?;
    let mut count = 1;
    while let Some(rec) = input.next_item()? {
        count += 1;
        let content = if rec.has_content() {
            let mut c = input.content();
            let n = io::copy(&mut c, &mut io::sink()).map_err(|e| dup::error::content_error("content", e))?;
            Some(n)
        } else {
            None
        };
        put(&mut out, table::line(&rec, content).as_bytes())?;
    }
    put(&mut out, format!("# end, {count} records (chunks not counted)").as_bytes())?;
    out.flush().map_err(|e| Error::io("writing to standard output", e))?;
    Ok(Status::Ok)
}

/// A name as duplicity lists it (its bytes as they are), but control
/// characters (C0, DEL, C1) as `\xNN`: an archive's names never drive the
/// terminal, and one name stays one line.
fn terminal_safe(name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let control = |c: char| c.is_control();
    if name.utf8_chunks().all(|ch| !ch.valid().chars().any(control)) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = Vec::with_capacity(name.len() + 8);
    for ch in name.utf8_chunks() {
        for c in ch.valid().chars() {
            let mut b = [0; 4];
            let bytes = c.encode_utf8(&mut b).as_bytes();
            if control(c) {
                bytes.iter().for_each(|x| out.extend_from_slice(format!("\\x{x:02x}").as_bytes()));
            } else {
                out.extend_from_slice(bytes);
            }
        }
        out.extend_from_slice(ch.invalid());
    }
    std::borrow::Cow::Owned(out)
}
