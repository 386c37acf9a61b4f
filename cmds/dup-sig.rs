//! dup-sig: Emit the signature state of an archive at a time, or of local files.

use argh::FromArgs;
use dup::cli;
use dup::error::Error;

/// Emit the signature state of an archive at a time, or of local files.
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
    let args: Args = cli::args("dup-sig");
    let _ = (args.json, args.rest);
    cli::main("dup-sig", || {
        Err(Error::other("not implemented yet").hint("see the project's open issues"))
    })
}
