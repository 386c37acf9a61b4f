//! dup-scan: walk a tree with duplicity's selection rules and emit an
//! `entry` record for each item, in duplicity's order.

use argh::FromArgs;
use dup::cli::{self, OsArg, Status};
use dup::error::Result;
use dup::record::{Encoding, StreamKind, Writer};
use dup::stage::scan::select::{self, Selection};
use dup::stage::scan::{self, Source};

dup::args_with_log_options! {
/// Walk SRC and write an entry record for each item a duplicity 0.8 backup
/// of SRC would hold (paths relative to SRC, the root as "."), in
/// duplicity's order, with duplicity's selection options. Unreadable items
/// are skipped with a warning record (exit code 3).
#[derive(FromArgs)]
#[argh(
    note = "Selection options are tried in the order given and the first that includes or excludes a path decides; \
            a path none speaks about is included. Globs are matched against SRC as given joined with the path \
            inside it (dup-scan /src --exclude '/src/tmp'), or start with '**'. See dup-scan(1).",
    error_code(1, "error"),
    error_code(2, "bad command line"),
    error_code(3, "some items could not be read and were skipped")
)]
// The selection fields are parsed here for validation and --help only: their
// order decides the result, so select::options_from_args reads them, in
// order, from the raw arguments.
#[allow(dead_code)]
struct Args {
    /// include what matches the shell glob GLOB, and everything under it
    /// (also the directories leading to it, if something in them is
    /// included); 'ignorecase:GLOB' matches without regard to case
    #[argh(option, arg_name = "GLOB")]
    include: Vec<OsArg>,
    /// exclude what matches the shell glob GLOB, and everything under it;
    /// 'ignorecase:GLOB' matches without regard to case
    #[argh(option, arg_name = "GLOB")]
    exclude: Vec<OsArg>,
    /// include paths in which the regular expression RE matches anywhere
    #[argh(option, arg_name = "RE")]
    include_regexp: Vec<OsArg>,
    /// exclude paths in which the regular expression RE matches anywhere
    #[argh(option, arg_name = "RE")]
    exclude_regexp: Vec<OsArg>,
    /// include the globs listed in FILE, one a line ('- GLOB' excludes,
    /// '+ GLOB' includes; blank lines and '#' comments are skipped)
    #[argh(option, arg_name = "FILE")]
    include_filelist: Vec<OsArg>,
    /// exclude the globs listed in FILE (as --include-filelist, but a plain
    /// line excludes)
    #[argh(option, arg_name = "FILE")]
    exclude_filelist: Vec<OsArg>,
    /// as --include-filelist, reading the list from standard input
    #[argh(switch)]
    include_filelist_stdin: bool,
    /// as --exclude-filelist, reading the list from standard input
    #[argh(switch)]
    exclude_filelist_stdin: bool,
    /// exclude a directory that holds an entry named NAME (tried before
    /// every other option)
    #[argh(option, arg_name = "NAME")]
    exclude_if_present: Vec<OsArg>,
    /// exclude what is on another file system than SRC (mount points included)
    #[argh(switch)]
    exclude_other_filesystems: bool,
    /// exclude character and block devices (tried before every other option)
    #[argh(switch)]
    exclude_device_files: bool,
    /// exclude regular files modified before TIME, in duplicity's syntax:
    /// seconds since the epoch, 2002-04-26T04:22:01[+02:00], 2002/4/26, an
    /// interval before now such as 3D or 1h30m, or now
    #[argh(option, arg_name = "TIME")]
    exclude_older_than: Vec<OsArg>,
    /// count the items and bytes alongside the walk and write a total record
    /// as soon as the count is done (for dup-delta's progress)
    #[argh(switch)]
    total: bool,
    /// filelists are separated by NUL bytes instead of line ends
    #[argh(switch)]
    null_separator: bool,
    /// write JSON Lines (the default when standard output is a terminal;
    /// CBOR otherwise)
    #[argh(switch)]
    json: bool,
    /// the directory to walk
    #[argh(positional, arg_name = "SRC")]
    src: OsArg,
}
}

fn main() {
    let args: Args = cli::args("dup-scan");
    cli::main("dup-scan", || run(&args))
}

fn run(args: &Args) -> Result<Status> {
    cli::output(&args.output_args(false))?;
    let opts = select::options_from_args(std::env::args_os().skip(1))?;
    let src = Source::open(&args.src.0)?;
    let sel = Selection::new(&src.root(), &opts, args.null_separator)?;
    let enc = Encoding::for_stdout(args.json);
    let mut out = Writer::with_source(cli::stdout(), enc, StreamKind::Entries, "dup-scan", Some(src.name()))?;
    let cancel = dup::cancel::Cancel::on_signals();
    let emit = |rec: &_| {
        cancel.check()?;
        out.write(rec)
    };
    let summary = if args.total { scan::walk_counted(&src, &sel, emit)? } else { scan::walk(&src, &sel, emit)? };
    out.finish()?;
    Ok(match summary.warnings {
        0 => Status::Ok,
        n => Status::Partial(format!("{n} item(s) could not be read and were skipped")),
    })
}
