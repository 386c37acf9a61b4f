//! dup-get: restore from an archive at a time: to a directory, as a check against one, or as a stream.

use std::io::Write;

use argh::FromArgs;
use dup::cli::{self, OsArg, Status};
use dup::dupfmt::time;
use dup::error::{Error, Result};
use dup::record::Encoding;
use dup::stage::get::{self, Action, Difference};

dup::args_with_log_options! {
archive_keys;
/// Restore the backup at URL as it was at a time (default: now) into DEST;
/// or compare it with a local tree (--verify SRC); or write it on standard
/// output as a record stream (--stream). Only the volumes the restore needs
/// are fetched, each checked against the manifest's hash. Entries that would
/// write outside DEST are refused.
#[derive(FromArgs)]
#[argh(
    note = "A damaged or missing volume, or a refused entry, is reported and skipped; everything else is still \
            restored, and the exit code is 13. See dup-get(1).",
    error_code(1, "error; with --verify: differences found; DEST not empty without --force"),
    error_code(2, "bad command line"),
    error_code(10, "no backup, or the --path is not in it at that time"),
    error_code(13, "a volume is missing or damaged, or an entry was refused")
)]
struct Args {
    /// archive URL (file:///path)
    #[argh(positional, arg_name = "URL")]
    url: String,
    /// directory to restore into (created if missing; it must be empty unless --force)
    #[argh(positional, arg_name = "DEST")]
    dest: Option<OsArg>,
    /// restore only this file or directory, given relative to the backup root;
    /// DEST becomes that item
    #[argh(option, arg_name = "PATH")]
    path: Option<OsArg>,
    /// the time to restore, in duplicity's time syntax (now, 1700000000,
    /// 2024-01-02T03:04:05Z, 3D, 2024/01/02 ...; default now)
    #[argh(option, arg_name = "TIME")]
    time: Option<String>,
    /// restore into a DEST that already holds files, replacing what is in the way
    #[argh(switch)]
    force: bool,
    /// as root, give items the stored numeric user and group ids instead of
    /// the local ids of the stored names
    #[argh(switch)]
    numeric_owner: bool,
    /// compare the backup with the local tree SRC instead of restoring it;
    /// print the differences, exit 1 if there are any
    #[argh(option, arg_name = "SRC")]
    verify: Option<OsArg>,
    /// with --verify, compare the contents of files too
    #[argh(switch)]
    compare_data: bool,
    /// write the restored tree to standard output as a record stream of
    /// snapshots (for dup-delta | dup-pack | dup-put: a synthetic full)
    #[argh(switch)]
    stream: bool,
    /// write JSON Lines (the stream of --stream, the differences of --verify)
    #[argh(switch)]
    json: bool,
    /// report progress: a bar on a terminal, JSON events on stderr otherwise
    #[argh(switch)]
    progress: bool,
}
}

fn main() {
    let args: Args = cli::args("dup-get");
    cli::main("dup-get", || run(&args))
}

fn run(args: &Args) -> Result<Status> {
    let modes = [args.dest.is_some(), args.verify.is_some(), args.stream].iter().filter(|&&m| m).count();
    if modes != 1 {
        return Err(Error::usage("give exactly one of DEST, --verify SRC and --stream")
            .hint("dup-get URL DEST restores into DEST"));
    }
    if args.compare_data && args.verify.is_none() {
        return Err(Error::usage("--compare-data goes with --verify"));
    }
    if args.force && args.dest.is_none() {
        return Err(Error::usage("--force goes with DEST"));
    }
    let progress = cli::output(&args.output_args(args.progress))?;
    let keys = args.archive_args(&args.url).keys.decrypt()?;
    let opts = get::Options {
        keys: Some(keys),
        url: args.url.clone(),
        time: args.time.as_deref().map(|t| time::parse_time(t, time::now())).transpose()?,
        path: args.path.as_ref().map(|p| p.0.clone()),
        archive_dir: args.archive_dir.as_ref().map(|d| d.as_path().to_path_buf()),
        name: args.name.clone(),
        cancel: dup::cancel::Cancel::on_signals(),
    };
    let mut out = cli::stdout();
    let mut stream_out = cli::stdout();
    let mut write_error: Option<Error> = None;
    let mut report = |d: &Difference| {
        if write_error.is_some() {
            return;
        }
        let line = if args.json {
            let v = serde_json::json!({ "path": d.path, "differences": d.what });
            v.to_string()
        } else {
            format!("{}: {}", d.path, d.what.join("; "))
        };
        if let Err(e) = writeln!(out, "{line}") {
            write_error = Some(Error::io("writing to standard output", e));
        }
    };
    let action = if let Some(dest) = &args.dest {
        Action::Restore { dest: dest.as_path().to_path_buf(), force: args.force, numeric_owner: args.numeric_owner }
    } else if let Some(src) = &args.verify {
        Action::Verify { src: src.as_path().to_path_buf(), compare_data: args.compare_data, report: &mut report }
    } else {
        Action::Stream { out: &mut stream_out, encoding: Encoding::for_stdout(args.json) }
    };
    let stats = get::run(&opts, action, progress)?;
    out.flush().map_err(|e| Error::io("writing to standard output", e))?;
    if let Some(e) = write_error {
        return Err(e);
    }
    log::info!(
        "{} items, {} bytes, from {} volumes ({} bytes)",
        stats.items,
        stats.bytes,
        stats.volumes,
        stats.volume_bytes
    );
    if let Some(e) = stats.error() {
        return Err(e);
    }
    if stats.differences > 0 {
        return Err(Error::other(format!(
            "{} item(s) differ between the backup of {} and {}",
            stats.differences,
            time::to_compact(stats.time),
            args.verify.as_ref().map(|s| s.as_path().display().to_string()).unwrap_or_default()
        )));
    }
    Ok(Status::Ok)
}
