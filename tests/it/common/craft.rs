//! Crafted archives for the trust tests: sets of volumes written with
//! Python's tarfile (entries no honest dup-pack writes: `..`, absolute
//! names, symlinks then writes through them, device nodes, huge declared
//! sizes, extension headers of gigabytes, gzip bombs), plain gzip or
//! OpenPGP-encrypted (gpg --symmetric), each manifest with its volumes'
//! true SHA1 and the ranges given.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// One tar entry (`kind`: file, dir, symlink, hardlink, chr, blk, fifo;
/// xhdr and longname are bare pax and GNU long-name extension headers).
#[derive(Clone)]
pub struct E {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    pub kind: &'static str,
    pub link: Vec<u8>,
    pub mode: Option<u32>,
    /// The size the header declares; the volume's tar ends after `data`.
    pub declared: Option<u64>,
    /// Zero bytes after `data` (streamed: gzip members of 64 MiB of zeros).
    pub zeros: u64,
    pub dev: (u32, u32),
    pub pax: Vec<(String, Vec<u8>)>,
}

impl E {
    fn new(kind: &'static str, name: &[u8], data: &[u8], link: &[u8]) -> E {
        E {
            name: name.to_vec(),
            data: data.to_vec(),
            kind,
            link: link.to_vec(),
            mode: None,
            declared: None,
            zeros: 0,
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
    pub fn mode(mut self, m: u32) -> E {
        self.mode = Some(m);
        self
    }
    pub fn declared(mut self, n: u64) -> E {
        self.declared = Some(n);
        self
    }
    pub fn zeros(mut self, n: u64) -> E {
        self.zeros = n;
        self
    }
    pub fn pax(mut self, key: &str, value: &[u8]) -> E {
        self.pax.push((key.to_string(), value.to_vec()));
        self
    }
}

pub fn file(name: &str, data: &[u8]) -> E {
    E::new("file", name.as_bytes(), data, b"")
}

pub fn file_b(name: &[u8], data: &[u8]) -> E {
    E::new("file", name, data, b"")
}

pub fn dir(name: &str) -> E {
    E::new("dir", name.as_bytes(), b"", b"")
}

pub fn symlink(name: &str, target: &Path) -> E {
    E::new("symlink", name.as_bytes(), b"", target.as_os_str().as_bytes())
}

pub fn hardlink(name: &str, target: &str) -> E {
    E::new("hardlink", name.as_bytes(), b"", target.as_bytes())
}

/// A character or block device node.
pub fn device(name: &str, block: bool, major: u32, minor: u32) -> E {
    let mut e = E::new(if block { "blk" } else { "chr" }, name.as_bytes(), b"", b"");
    e.dev = (major, minor);
    e.mode = Some(0o666);
    e
}

/// A bare extension header (`xhdr`: pax, `longname`: GNU) of `size` zero bytes.
pub fn extension(kind: &'static str, size: u64) -> E {
    let name: &[u8] = if kind == "xhdr" { b"././@PaxHeader" } else { b"././@LongLink" };
    E::new(kind, name, b"", b"").zeros(size)
}

/// One volume: its entries, and the range its manifest block gives
/// (`StartingPath`, `EndingPath`; plain names without spaces).
pub struct Vol {
    pub start: &'static str,
    pub end: &'static str,
    pub entries: Vec<E>,
}

/// A set: a full at `time`, or an incremental from `from` to `time`
/// (compact times, `20240102T030405Z`).
pub struct Set {
    pub from: Option<&'static str>,
    pub time: &'static str,
    pub volumes: Vec<Vol>,
}

/// An incremental after the full of `T` (`20240102T030405Z`) that turns the
/// directory `d` into a symlink to `outside`, with a new file below it and
/// a delta of `d/f`: neither may be written through it.
pub fn inc_dir_to_symlink(outside: &Path) -> Set {
    Set {
        from: Some("20240102T030405Z"),
        time: "20240103T030405Z",
        volumes: vec![Vol {
            start: ".",
            end: "zzz",
            entries: vec![
                dir("snapshot/./"),
                symlink("snapshot/d", outside),
                file("snapshot/d/g", b"bad\n"),
                file("diff/d/f", b"bad\n"),
            ],
        }],
    }
}

/// How volumes are written beyond their entries.
#[derive(Default, Clone)]
pub struct Opts {
    /// Encrypt volumes and manifests with gpg --symmetric and this passphrase.
    pub passphrase: Option<String>,
    /// Zero bytes after the tar's end, as gzip members (a bomb past the end).
    pub tail_zeros: u64,
    /// Keep only the first N bytes of each volume file of these (set, volume
    /// number) pairs; `rehash`: the manifest gets the cut file's hash.
    pub cut: Vec<(usize, u64, usize)>,
    pub rehash: bool,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn set_name(s: &Set) -> String {
    match s.from {
        Some(f) => format!("duplicity-inc.{f}.to.{}", s.time),
        None => format!("duplicity-full.{}", s.time),
    }
}

/// Writes plain (gzip) sets into `arch`.
pub fn craft(arch: &Path, sets: &[Set]) {
    craft_with(arch, sets, &Opts::default());
}

/// Writes the sets into `arch` as `opts` says.
pub fn craft_with(arch: &Path, sets: &[Set], opts: &Opts) {
    fs::create_dir_all(arch).unwrap();
    let spec = serde_json::json!({
        "arch": arch.to_str().unwrap(),
        "passphrase": opts.passphrase,
        "tail_zeros": opts.tail_zeros,
        "cut": opts.cut,
        "rehash": opts.rehash,
        "sets": sets.iter().map(|s| serde_json::json!({
            "base": set_name(s),
            "volumes": s.volumes.iter().map(|v| serde_json::json!({
                "start": v.start,
                "end": v.end,
                "entries": v.entries.iter().map(|e| serde_json::json!({
                    "kind": e.kind, "name": hex(&e.name), "link": hex(&e.link), "data": hex(&e.data),
                    "mode": e.mode, "declared": e.declared, "zeros": e.zeros, "dev": [e.dev.0, e.dev.1],
                    "pax": e.pax.iter().map(|(k, v)| (k.clone(), hex(v))).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(PY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), &spec).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
}

const PY: &str = r#"
import gzip, hashlib, json, os, subprocess, sys, tarfile, tempfile
spec = json.load(sys.stdin)
arch, pw = spec["arch"], spec["passphrase"]
kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
         "fifo": tarfile.FIFOTYPE, "xhdr": tarfile.XHDTYPE, "longname": tarfile.GNUTYPE_LONGNAME}
Z = 1 << 26
ZMEMBER = None
def dec(h):
    return bytes.fromhex(h).decode("utf-8", "surrogateescape")
def tar_parts(entries, tail):
    """The volume's tar as parts: ("b", bytes) or ("z", n zero bytes)."""
    parts = []
    truncated = False
    for e in entries:
        ti = tarfile.TarInfo(dec(e["name"]))
        ti.type, ti.linkname, ti.mtime = kinds[e["kind"]], dec(e["link"]), 1704164645
        ti.mode = e["mode"] if e["mode"] is not None else (0o755 if e["kind"] == "dir" else 0o644)
        ti.devmajor, ti.devminor = e["dev"]
        data = bytes.fromhex(e["data"])
        content = len(data) + e["zeros"]
        ti.size = e["declared"] if e["declared"] is not None else content
        for k, v in e["pax"]:
            ti.pax_headers[k] = dec(v)
        fmt = tarfile.GNU_FORMAT if e["kind"] in ("xhdr", "longname") else tarfile.PAX_FORMAT
        parts.append(("b", ti.tobuf(fmt, "utf-8", "surrogateescape") + data))
        if e["zeros"]:
            parts.append(("z", e["zeros"]))
        if e["declared"] is not None:
            truncated = True
            break
        parts.append(("b", bytes(-content % 512)))
    if not truncated:
        parts.append(("b", bytes(1024)))
    if tail:
        parts.append(("z", tail))
    return parts
def gz(parts, out):
    global ZMEMBER
    for kind, v in parts:
        if kind == "b":
            out.write(gzip.compress(v, 6))
            continue
        if ZMEMBER is None:
            ZMEMBER = gzip.compress(bytes(Z), 9)
        for _ in range(v // Z):
            out.write(ZMEMBER)
        if v % Z:
            out.write(gzip.compress(bytes(v % Z), 9))
def gpg(path, feed):
    home = tempfile.mkdtemp()
    p = subprocess.Popen(["gpg", "--batch", "--yes", "--quiet", "--homedir", home, "--pinentry-mode", "loopback",
                          "--passphrase", pw, "--symmetric", "--cipher-algo", "AES256", "-o", path],
                         stdin=subprocess.PIPE)
    feed(p.stdin)
    p.stdin.close()
    assert p.wait() == 0
def plain(parts, f):
    for kind, v in parts:
        if kind == "b":
            f.write(v)
        else:
            chunk = bytes(1 << 20)
            for i in range(0, v, 1 << 20):
                f.write(chunk[: min(1 << 20, v - i)])
cuts = {(s, v): n for s, v, n in spec["cut"]}
for si, st in enumerate(spec["sets"]):
    base = st["base"]
    manifest = "Hostname h\nLocaldir /src\n"
    for n, vol in enumerate(st["volumes"], 1):
        parts = tar_parts(vol["entries"], spec["tail_zeros"])
        path = f"{arch}/{base}.vol{n}.difftar." + ("gpg" if pw else "gz")
        if pw:
            gpg(path, lambda f: plain(parts, f))
        else:
            with open(path, "wb") as f:
                gz(parts, f)
        data = open(path, "rb").read()
        if (si, n) in cuts:
            cut = data[: cuts[(si, n)]]
            open(path, "wb").write(cut)
            if spec["rehash"]:
                data = cut
        manifest += f"Volume {n}:\n    StartingPath   {vol['start']}  \n    EndingPath     {vol['end']}  \n"
        manifest += f"    Hash SHA1 {hashlib.sha1(data).hexdigest()}\n"
    manifest += "Filelist 0\n"
    if pw:
        gpg(f"{arch}/{base}.manifest.gpg", lambda f: f.write(manifest.encode()))
    else:
        open(f"{arch}/{base}.manifest", "w").write(manifest)
"#;

/// Every path under `root` (relative, sorted), not following symlinks.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, p: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(p) else { return };
        for e in rd {
            let e = e.unwrap();
            let path = e.path();
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v.sort();
    v
}
