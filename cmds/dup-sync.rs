//! dup-sync: Bring the local metadata cache into agreement with the backend.

use argh::FromArgs;
use dup::cli;
use dup::error::Error;

/// Bring the local metadata cache into agreement with the backend.
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
    let args: Args = cli::args("dup-sync");
    let _ = (args.json, args.rest);
    cli::main("dup-sync", || {
        Err(Error::other("not implemented yet").hint("see the project's open issues"))
    })
}
