//! dup-ls: show a record stream as a table, or (with a URL) list an archive.

use std::io::{self, BufWriter, Write};

use argh::FromArgs;
use dup::cli::{self, Status};
use dup::error::{Error, Result};
use dup::record::{self, Encoding, Record};

/// List backup chains and sets at URL, or the files present at a time. With
/// no URL, read any dup record stream on standard input and show it: a table
/// for people, JSON Lines with --json.
#[derive(FromArgs)]
struct Args {
    /// write JSON Lines instead of a table
    #[argh(switch)]
    json: bool,
    /// archive URL (file:///path ...); omit to read a stream from standard input
    #[argh(positional)]
    url: Option<String>,
}

fn main() {
    let args: Args = cli::args("dup-ls");
    cli::main("dup-ls", || match &args.url {
        None => render(args.json),
        Some(url) => Err(
            Error::other(format!("listing the archive {url} is not implemented yet"))
                .hint("this build renders record streams only: dup-scan SRC | dup-ls"),
        ),
    })
}

/// Renders standard input: records as a table, or re-encoded as JSON Lines.
fn render(json: bool) -> Result<Status> {
    let mut input = cli::stdin_records()?;
    let out = BufWriter::new(io::stdout());
    if json {
        let mut w = record::Writer::with_head(out, Encoding::Json, input.head().clone())?;
        while let Some(rec) = input.next()? {
            w.write(&rec)?;
        }
        w.finish()?;
        return Ok(Status::Ok);
    }
    let mut out = out;
    let h = input.head().clone();
    let head = Record::Header {
        stream: h.stream,
        version: record::VERSION,
        producer: h.producer,
        source: h.source,
        basis_time: h.basis_time,
    };
    let put = |out: &mut BufWriter<io::Stdout>, s: String| -> Result<()> {
        writeln!(out, "{s}").map_err(|e| Error::io("writing to standard output", e))
    };
    put(&mut out, dup::table::line(&head, None))?;
    let mut count = 1;
    while let Some(rec) = input.next_item()? {
        count += 1;
        let content = if rec.has_content() {
            let mut c = input.content();
            let n = io::copy(&mut c, &mut io::sink()).map_err(|e| record::content_error("content", e))?;
            Some(n)
        } else {
            None
        };
        put(&mut out, dup::table::line(&rec, content))?;
    }
    put(&mut out, format!("# end, {count} records (chunks not counted)"))?;
    out.flush().map_err(|e| Error::io("writing to standard output", e))?;
    Ok(Status::Ok)
}
