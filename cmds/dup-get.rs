//! dup-get: Restore from an archive at a time: to a directory, as a check against one, or as a stream.

use argh::FromArgs;
use dup::cli;
use dup::error::Error;

/// Restore from an archive at a time: to a directory, as a check against one, or as a stream.
#[derive(FromArgs)]
struct Args {
    /// write JSON Lines instead of CBOR
    #[argh(switch)]
    json: bool,
    /// arguments (see the man page)
    #[argh(positional)]
    rest: Vec<String>,
}

fn main() {
    let args: Args = cli::args("dup-get");
    let _ = (args.json, args.rest);
    cli::main("dup-get", || {
        Err(Error::other("not implemented yet").hint("see the project's open issues"))
    })
}
