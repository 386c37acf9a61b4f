//! dup-delta: Join current entries with a basis signature stream and emit snapshot, diff and deleted records with their data.

use argh::FromArgs;
use dup::cli;
use dup::error::Error;

/// Join current entries with a basis signature stream and emit snapshot, diff and deleted records with their data.
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
    let args: Args = cli::args("dup-delta");
    let _ = (args.json, args.rest);
    cli::main("dup-delta", || {
        Err(Error::other("not implemented yet").hint("see the project's open issues"))
    })
}
