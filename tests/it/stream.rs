//! The record stream: random records round-trip through CBOR and JSON, and
//! malformed input is a clear error (never a panic) in the library and in
//! dup-ls.

use std::io::{Cursor, Write};
use std::process::{Command, Stdio};

use crate::common::run_with_stdin;
use dup::record::{Bytes, Encoding, Entry, FileRole, FileType, PathBytes, Reader, Record, Stored, StreamKind, Writer};
use proptest::prelude::*;

fn arb_path() -> impl Strategy<Value = PathBytes> {
    prop::collection::vec(any::<u8>(), 0..40).prop_map(PathBytes)
}

fn arb_type() -> impl Strategy<Value = FileType> {
    prop_oneof![
        Just(FileType::File),
        Just(FileType::Dir),
        Just(FileType::Symlink),
        Just(FileType::Fifo),
        Just(FileType::Char),
        Just(FileType::Block),
    ]
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        arb_path(),
        arb_type(),
        (0u32..0o10000, any::<u32>(), any::<u32>()),
        (".{0,8}", ".{0,8}"),
        (any::<i64>(), any::<u64>()),
        prop::option::of(arb_path()),
        prop::option::of((any::<u32>(), any::<u32>())),
        (any::<u64>(), any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(path, ftype, (mode, uid, gid), (uname, gname), (mtime, size), target, dev, (d, ino, nlink))| Entry {
                path,
                ftype,
                mode,
                uid,
                gid,
                uname,
                gname,
                mtime,
                size,
                target,
                devmajor: dev.map(|d| d.0),
                devminor: dev.map(|d| d.1),
                dev: d,
                ino,
                nlink,
            },
        )
}

fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        arb_entry().prop_map(Record::Entry),
        arb_entry().prop_map(Record::Snapshot),
        arb_entry().prop_map(Record::Diff),
        arb_entry().prop_map(Record::Signature),
        (arb_path(), prop::option::of(arb_type())).prop_map(|(path, ftype)| Record::Deleted { path, ftype }),
        (prop::option::of(arb_path()), ".{0,30}").prop_map(|(path, message)| Record::Warning { path, message }),
        (prop::collection::vec(any::<u8>(), 0..300), any::<bool>())
            .prop_map(|(d, last)| { Record::Chunk { data: Bytes(d), last } }),
        (
            "[a-z.0-9]{1,30}",
            any::<bool>(),
            prop::option::of("[0-9a-f]{64}"),
            prop::option::of((any::<u64>(), "[0-9a-f]{40}"))
        )
            .prop_map(|(name, delete, plain, stored)| Record::File {
                name,
                role: FileRole::Volume,
                delete,
                plain,
                stored: stored.map(|(size, sha1)| Stored { size, sha1 }),
            }),
    ]
}

fn encode(recs: &[Record], enc: Encoding) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), enc, StreamKind::Changes, "test").unwrap();
    for r in recs {
        w.write(r).unwrap();
    }
    w.finish().unwrap()
}

fn decode(buf: &[u8]) -> dup::Result<Vec<Record>> {
    let mut r = Reader::new(Cursor::new(buf), "test input")?;
    let mut out = Vec::new();
    while let Some(rec) = r.next()? {
        out.push(rec);
    }
    Ok(out)
}

proptest! {
    #[test]
    fn roundtrip_both_encodings(recs in prop::collection::vec(arb_record(), 0..20)) {
        for enc in [Encoding::Cbor, Encoding::Json] {
            let buf = encode(&recs, enc);
            prop_assert_eq!(&decode(&buf).unwrap(), &recs);
        }
    }

    #[test]
    fn truncation_is_an_error(recs in prop::collection::vec(arb_record(), 1..8), cut in any::<prop::sample::Index>()) {
        for enc in [Encoding::Cbor, Encoding::Json] {
            let buf = encode(&recs, enc);
            // Dropping only the final newline of JSON Lines leaves a complete stream.
            let whole = if enc == Encoding::Json { buf.len() - 1 } else { buf.len() };
            let n = cut.index(whole);
            let r = decode(&buf[..n]);
            prop_assert!(r.is_err(), "a stream cut at {} of {} bytes was accepted", n, buf.len());
        }
    }

    /// The names kept by hand for messages are the JSON names: the record
    /// kind (the serde tag) and the file type.
    #[test]
    fn kind_and_type_names_are_the_json_ones(rec in arb_record()) {
        let json = serde_json::to_value(&rec).unwrap();
        prop_assert_eq!(json["kind"].as_str(), Some(rec.kind_name()));
        if let Record::Entry(e) | Record::Snapshot(e) | Record::Diff(e) | Record::Signature(e) = &rec {
            prop_assert_eq!(json["type"].as_str(), Some(e.ftype.name()));
        }
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode(&bytes);
    }
}

#[test]
fn non_utf8_path_json_form() {
    let e = Entry::new(b"caf\xe9\\x.txt".to_vec(), FileType::File);
    let buf = encode(&[Record::Entry(e.clone())], Encoding::Json);
    let text = String::from_utf8(buf.clone()).unwrap();
    assert!(text.contains(r#""path":{"escaped":"caf\\xe9\\\\x.txt"}"#), "{text}");
    assert_eq!(decode(&buf).unwrap(), vec![Record::Entry(e)]);
}

#[test]
fn content_chunks_are_bounded() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = Writer::new(Vec::new(), Encoding::Cbor, StreamKind::Changes, "test").unwrap();
    w.write(&Record::Snapshot(Entry::new(b"big".to_vec(), FileType::File))).unwrap();
    w.write_content(&data[..]).unwrap();
    let buf = w.finish().unwrap();
    let recs = decode(&buf).unwrap();
    let chunks: Vec<usize> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Chunk { data, .. } => Some(data.0.len()),
            _ => None,
        })
        .collect();
    assert!(chunks.iter().all(|&n| n <= dup::record::CHUNK_SIZE));
    assert_eq!(chunks.iter().sum::<usize>(), data.len());
    let mut r = Reader::new(Cursor::new(&buf), "t").unwrap();
    let rec = r.next_item().unwrap().unwrap();
    assert!(rec.has_content());
    let mut back = Vec::new();
    std::io::copy(&mut r.content(), &mut back).unwrap();
    assert_eq!(back, data);
    assert!(r.next().unwrap().is_none());
}

#[test]
fn newer_version_is_refused() {
    let line = br#"{"kind":"header","stream":"entries","version":99,"producer":"future"}"#;
    let err = decode(line).unwrap_err();
    assert!(err.message.contains("newer"), "{}", err.message);
}

fn dup_ls(input: &[u8], args: &[&str]) -> (i32, String, String) {
    let out = run_with_stdin(Command::new(env!("CARGO_BIN_EXE_dup-ls")).args(args), input);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sample() -> Vec<Record> {
    let mut f = Entry::new(b"dir/caf\xe9.txt".to_vec(), FileType::File);
    f.mode = 0o644;
    f.size = 5;
    vec![
        Record::Entry(Entry::new(b".".to_vec(), FileType::Dir)),
        Record::Snapshot(f),
        Record::Chunk { data: Bytes(b"hello".to_vec()), last: true },
        Record::Deleted { path: PathBytes(b"gone".to_vec()), ftype: Some(FileType::File) },
    ]
}

#[test]
fn dup_ls_renders_both_encodings() {
    for enc in [Encoding::Cbor, Encoding::Json] {
        let (code, out, err) = dup_ls(&encode(&sample(), enc), &[]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("snapshot"), "{out}");
        assert!(out.contains("dir/caf\\xe9.txt"), "{out}");
        assert!(out.contains("(+5 bytes)"), "{out}");
        assert!(out.contains("deleted   gone"), "{out}");
        let (code, json, _) = dup_ls(&encode(&sample(), enc), &["--json"]);
        assert_eq!(code, 0);
        assert_eq!(decode(json.as_bytes()).unwrap(), sample());
    }
}

#[test]
fn dup_ls_rejects_bad_input_with_position() {
    let good = encode(&sample(), Encoding::Cbor);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("random bytes", (0..200u32).map(|i| (i * 7 + 3) as u8).collect(), "not a dup record stream"),
        ("truncated CBOR", good[..good.len() - 9].to_vec(), "record"),
        ("CBOR without end", encode(&sample(), Encoding::Cbor)[..good.len() - 2].to_vec(), "record"),
        ("JSON of another shape", b"{\"name\": \"x\", \"size\": 3}\n".to_vec(), "record 1"),
        (
            "JSON record of unknown kind",
            b"{\"kind\":\"header\",\"stream\":\"entries\",\"version\":1,\"producer\":\"t\"}\n{\"kind\":\"bogus\"}\n"
                .to_vec(),
            "record 2",
        ),
        ("empty input", Vec::new(), "empty input"),
    ];
    for (what, input, needle) in cases {
        let (code, _out, err) = dup_ls(&input, &[]);
        assert!(code != 0 && code != 101, "{what}: exit {code}, stderr {err}");
        assert!(err.starts_with("dup-ls: "), "{what}: {err}");
        assert!(err.contains(needle), "{what}: expected '{needle}' in: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

#[test]
fn closed_stdout_is_not_an_error() {
    let mut recs = Vec::new();
    for i in 0..20000 {
        recs.push(Record::Deleted { path: PathBytes(format!("file-{i}").into_bytes()), ftype: None });
    }
    let input = encode(&recs, Encoding::Cbor);
    let mut ls = Command::new(env!("CARGO_BIN_EXE_dup-ls"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = ls.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = ls.stdout.take().unwrap();
    let mut first = [0u8; 10];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = ls.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn closed_stdout_while_writing_content_is_not_an_error() {
    // dup-pack writes each volume with write_content; the reader goes away
    // after a few bytes: exit 0, not 1 (regression: the error lost its kind).
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Incompressible, so the volumes overflow the pipe before the reader leaves.
    let mut x = 0x9e3779b97f4a7c15u64;
    let data: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.join("big"), data).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_dup-pack")).parent().unwrap().to_path_buf();
    let script = format!(
        "{b}/dup-scan {s} | {b}/dup-delta | {b}/dup-pack --no-encryption --volsize 1 | head -c 10 >/dev/null; echo ${{PIPESTATUS[2]}}",
        b = bin.display(),
        s = src.display()
    );
    let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{}", String::from_utf8_lossy(&out.stderr));
}
