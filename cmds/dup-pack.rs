//! dup-pack: Cut a change stream into difftar volumes, the signature tar and the manifest.

use argh::FromArgs;
use dup::cli;
use dup::error::Error;

/// Cut a change stream into difftar volumes, the signature tar and the manifest.
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
    let args: Args = cli::args("dup-pack");
    let _ = (args.json, args.rest);
    cli::main("dup-pack", || {
        Err(Error::other("not implemented yet").hint("see the project's open issues"))
    })
}
