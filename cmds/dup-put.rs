//! dup-put: Store archive files on a backend (manifest last), or delete them.

use argh::FromArgs;
use dup::cli;
use dup::error::Error;

/// Store archive files on a backend (manifest last), or delete them.
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
    let args: Args = cli::args("dup-put");
    let _ = (args.json, args.rest);
    cli::main("dup-put", || {
        Err(Error::other("not implemented yet").hint("see the project's open issues"))
    })
}
