//! dup-sig: the signature state of an archive at a time, or of local files.

use std::io;

use argh::FromArgs;
use dup::api::BackupMode;
use dup::cli::{self, Status};
use dup::dupfmt::time;
use dup::error::{Error, Result};
use dup::progress;
use dup::record::{Encoding, StreamHead, StreamKind, Writer};
use dup::stage::delta;
use dup::stage::sig::SigState;

dup::args_with_log_options! {
archive_keys;
/// Write a signature stream: with --archive, the combined signature state of
/// that archive at a time (the full signature and the chain's new signatures,
/// newest entry per path), read from the local cache that dup-sync keeps;
/// without it, the signatures of the local files named by an entry stream
/// (from dup-scan) on standard input. The stream is the basis dup-delta
/// compares against.
#[derive(FromArgs)]
struct Args {
    /// archive URL (file:///path)
    #[argh(option)]
    archive: Option<String>,
    /// the time to take the state at, in duplicity's time syntax (default: the chain's end)
    #[argh(option)]
    time: Option<String>,
    /// write an empty state (so the next backup is a full) when the newest chain's full backup is older than this time
    #[argh(option)]
    full_if_older_than: Option<String>,
    /// write an empty state (so the next backup is a full) when the archive has no backup chain, instead of failing
    #[argh(switch)]
    or_empty: bool,
    /// check that the passphrase opens the chain (the default when the chain is encrypted with a passphrase; kept for old scripts)
    #[argh(switch)]
    check_passphrase: bool,
    /// do not check that the passphrase opens the chain, and hand dup-pack nothing to check its own against
    #[argh(switch)]
    no_check_passphrase: bool,
    /// write JSON Lines instead of CBOR
    #[argh(switch)]
    json: bool,
}
}

fn main() {
    let args: Args = cli::args("dup-sig");
    cli::main("dup-sig", || {
        cli::output(&args.output_args(false))?;
        match &args.archive {
            Some(url) => archive(&args, url),
            None => local(&args),
        }
    })
}

fn archive(args: &Args, url: &str) -> Result<Status> {
    let a = args.archive_args(url).open()?;
    let keys = a.keys.clone().expect("opened with keys");
    if args.check_passphrase && args.no_check_passphrase {
        return Err(Error::usage("--check-passphrase contradicts --no-check-passphrase"));
    }
    let coll = a.collection()?;
    let now = time::now();
    let t = args.time.as_deref().map(|s| time::parse_time(s, now)).transpose()?;
    let mode = if args.or_empty { BackupMode::Auto } else { BackupMode::Incremental };
    let limit = args.full_if_older_than.as_deref().map(|l| time::parse_time(l, now)).transpose()?;
    let start = coll.primary_chain().map(|c| c.start_time());
    let empty = dup::api::next_is_full(mode, start, limit, url).map_err(|e| {
        let hint = "run a full backup first (or pass --or-empty)";
        if e.kind == dup::Kind::NoBackup { e.hint(hint) } else { e }
    })?;
    if empty {
        let head = StreamHead {
            stream: StreamKind::Signatures,
            producer: "dup-sig".into(),
            source: None,
            basis_time: None,
            passphrase_check: None,
        };
        Writer::with_head(cli::stdout(), Encoding::for_stdout(args.json), head)?.finish()?;
        return Ok(Status::Ok);
    }
    // The next backup extends the chain. One encrypted with a passphrase:
    // ours must open it, and dup-pack gets a message under it to check its
    // own against.
    let checked = !args.no_check_passphrase && a.check_passphrase(&coll, &keys)?;
    let mut state = SigState::at(&coll, t, &a)?;
    let mut head = state.head();
    if checked {
        head.passphrase_check = dup::crypto::passphrase_message(&keys)?.map(dup::record::Bytes);
    }
    let mut out = Writer::with_head(cli::stdout(), Encoding::for_stdout(args.json), head)?;
    state.write_stream(&mut out)?;
    out.finish()?;
    Ok(Status::Ok)
}

/// Signatures of local files: dup-delta against an empty basis, keeping
/// only the signatures.
fn local(args: &Args) -> Result<Status> {
    if args.time.is_some() {
        return Err(Error::usage("--time applies to --archive only"));
    }
    let mut input = cli::stdin_records()?;
    let head = StreamHead {
        stream: StreamKind::Signatures,
        producer: "dup-sig".into(),
        source: input.source().map(|s| dup::record::PathBytes(s.to_vec())),
        basis_time: None,
        passphrase_check: None,
    };
    let out = Writer::with_head(cli::stdout(), Encoding::for_stdout(args.json), head)?;
    let opts = delta::Options { signatures_only: true, ..Default::default() };
    let (_, stats) = delta::run::<_, io::Empty, _>(&mut input, None, out, &opts, &progress::Silent)?;
    if stats.warnings > 0 {
        return Ok(Status::Partial(format!("{} items could not be read and were left out", stats.warnings)));
    }
    Ok(Status::Ok)
}
