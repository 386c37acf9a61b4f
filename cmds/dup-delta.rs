//! dup-delta: join current entries with a basis and emit what changed.

use std::io::BufReader;

use argh::FromArgs;
use dup::cli::{self, OsArg, Status};
use dup::error::{Context, Result};
use dup::progress::Event;
use dup::record::{Encoding, Reader, Writer};
use dup::stage::delta;

dup::args_with_log_options! {
/// Read entries (from dup-scan) or snapshots (from dup-get --stream) on
/// standard input, join them with a basis signature stream (from dup-sig; none
/// for a full backup), and write snapshot, diff and deleted records with their
/// data, each followed, for a regular file, by its new signature. Unchanged
/// files are not read.
#[derive(FromArgs)]
struct Args {
    /// signature stream to compare against (e.g. <(dup-sig --archive URL)); omit for a full backup
    #[argh(option)]
    basis: Option<OsArg>,
    /// directory the entries' files are read from (default: the one dup-scan names)
    #[argh(option)]
    source: Option<OsArg>,
    /// largest librsync block size (duplicity's --max-blocksize; default 2048)
    #[argh(option, default = "dup::dupfmt::rsync::DEFAULT_MAX_BLOCK")]
    max_blocksize: u32,
    /// write JSON Lines instead of CBOR
    #[argh(switch)]
    json: bool,
    /// report progress: a bar on a terminal, JSON events on stderr otherwise
    #[argh(switch)]
    progress: bool,
}
}

fn main() {
    let args: Args = cli::args("dup-delta");
    cli::main("dup-delta", || run(&args))
}

fn run(args: &Args) -> Result<Status> {
    let progress = cli::output(&args.output_args(args.progress))?;
    let mut input = cli::stdin_records()?;
    let mut basis = match &args.basis {
        Some(p) => {
            let f = std::fs::File::open(p.as_path()).context(format!("opening the basis {}", p.as_path().display()))?;
            Some(Reader::new(BufReader::with_capacity(256 * 1024, f), &p.as_path().display().to_string())?)
        }
        None => None,
    };
    let head = delta::output_head(input.head(), basis.as_ref().map(|b| b.head()));
    let out = Writer::with_head(cli::stdout(), Encoding::for_stdout(args.json), head)?;
    let opts = delta::Options {
        source: args.source.as_ref().map(|s| s.as_path().to_path_buf()),
        max_block: args.max_blocksize,
        signatures_only: false,
        cancel: dup::cancel::Cancel::on_signals(),
    };
    let started = std::time::Instant::now();
    let (_, stats) = delta::run(&mut input, basis.as_mut(), out, &opts, progress)?;
    // The wrapper's statistics block reads this line.
    log::info!(
        "{} new, {} changed, {} deleted, {} unchanged; {} files read",
        stats.new,
        stats.changed,
        stats.deleted,
        stats.unchanged,
        stats.files_read
    );
    progress.event(Event::Summary(stats.summary(started.elapsed().as_secs())));
    if stats.warnings > 0 {
        return Ok(Status::Partial(format!("{} items could not be read and were left out", stats.warnings)));
    }
    Ok(Status::Ok)
}
