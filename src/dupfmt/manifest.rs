//! Manifests (FORMAT-duplicity.md §2): what volumes a set has, the path
//! range and hash of each, and the set's list of changed files.
//!
//! Writing is byte-exact with duplicity's streamed manifests: the header
//! ([`header_bytes`]), one block per volume as it is finished
//! ([`VolumeInfo::to_bytes`]), the `Filelist` last ([`filelist_bytes`]).
//! Reading applies duplicity's tolerances (§2.4).

use std::collections::BTreeMap;
use std::io::BufRead;

use crate::dupfmt::index;
use crate::error::{Error, Result};

/// A volume's entry: the first and last index it holds, with the chunk
/// number when that entry is a multivol chunk other than the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub number: u64,
    /// Index of the first entry (`.` for the root).
    pub start: Vec<u8>,
    pub start_block: Option<u64>,
    /// Index of the last entry.
    pub end: Vec<u8>,
    pub end_block: Option<u64>,
    /// (hash name, hex digest) in file order; duplicity writes only `SHA1`.
    pub hashes: Vec<(String, String)>,
}

impl VolumeInfo {
    /// A volume block with a SHA1 hash (lowercase hex).
    pub fn new(
        number: u64,
        start: &[u8],
        start_block: Option<u64>,
        end: &[u8],
        end_block: Option<u64>,
        sha1: &str,
    ) -> Self {
        VolumeInfo {
            number,
            start: start.to_vec(),
            start_block,
            end: end.to_vec(),
            end_block,
            hashes: vec![("SHA1".to_string(), sha1.to_ascii_lowercase())],
        }
    }

    /// The hash duplicity checks: SHA1, else MD5, else the first one.
    pub fn best_hash(&self) -> Option<(&str, &str)> {
        let find = |n: &str| self.hashes.iter().find(|(k, _)| k == n);
        find("SHA1").or_else(|| find("MD5")).or(self.hashes.first()).map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when the volume may hold `prefix` or something under it (§2.5):
    /// `start[:len(prefix)] <= prefix <= end`, component-wise.
    pub fn contains(&self, prefix: &[u8]) -> bool {
        let p: Vec<&[u8]> = index::components(prefix).collect();
        let start: Vec<&[u8]> = index::components(&self.start).take(p.len()).collect();
        let end: Vec<&[u8]> = index::components(&self.end).collect();
        start <= p && p <= end
    }

    /// The block as duplicity writes it, with its final LF.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("Volume {}:\n", self.number).into_bytes();
        for (label, idx, block) in
            [("StartingPath   ", &self.start, self.start_block), ("EndingPath     ", &self.end, self.end_block)]
        {
            out.extend_from_slice(b"    ");
            out.extend_from_slice(label.as_bytes());
            out.extend_from_slice(&index_text(idx));
            out.push(b' ');
            match block {
                Some(b) => out.extend_from_slice(b.to_string().as_bytes()),
                None => out.push(b' '),
            }
            out.push(b'\n');
        }
        for (k, v) in &self.hashes {
            out.extend_from_slice(format!("    Hash {k} {v}\n").as_bytes());
        }
        out
    }
}

fn index_text(idx: &[u8]) -> Vec<u8> {
    if index::components(idx).next().is_none() { b".".to_vec() } else { quote(idx) }
}

/// How a file changed in a set (`Filelist` lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Stored as a snapshot.
    New,
    /// Stored as a diff.
    Changed,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Changed => "changed",
            Change::Deleted => "deleted",
        }
    }
}

/// A `Filelist` line: a regular file that is new, changed or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub change: Change,
    /// The path (index), unquoted.
    pub path: Vec<u8>,
}

/// The longest manifest line read (a quoted path of 4096 bytes is at most
/// 16 KiB).
pub const MAX_LINE: usize = 64 << 10;

/// A parsed manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub hostname: Option<String>,
    /// The source directory as given (quoted in the file).
    pub localdir: Option<Vec<u8>>,
    pub volumes: BTreeMap<u64, VolumeInfo>,
    /// `None` when the manifest has no `Filelist` (before 0.8), or when it
    /// was read without it ([`Manifest::read`]).
    pub files: Option<Vec<FileChange>>,
}

impl Manifest {
    /// The whole manifest as duplicity streams it: header, volumes in
    /// ascending order, `Filelist` (when present).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = header_bytes(self.hostname.as_deref().unwrap_or(""), self.localdir.as_deref().unwrap_or(b""));
        for v in self.volumes.values() {
            out.extend_from_slice(&v.to_bytes());
        }
        if let Some(files) = &self.files {
            out.extend_from_slice(&filelist_bytes(files));
        }
        out
    }

    /// The volumes that may hold `prefix` or something under it, ascending
    /// (all of them for the root).
    pub fn volumes_for(&self, prefix: &[u8]) -> Vec<u64> {
        self.volumes.values().filter(|v| v.contains(prefix)).map(|v| v.number).collect()
    }

    /// Parses a manifest (§2.4): keywords in any case; `Hostname`/`Localdir`
    /// from their first line; a volume block runs from a `Volume N:` line to
    /// the next one and only its `StartingPath`, `EndingPath` and `Hash`
    /// lines count; a repeated volume number overwrites, and numbers above
    /// the last block's are dropped. Errors are [`Kind::Corrupt`](crate::error::Kind::Corrupt)
    /// and name the line.
    pub fn parse(data: &[u8]) -> Result<Manifest> {
        Manifest::read(data, true)
    }

    /// [`Manifest::parse`] from a reader, a line at a time; unless
    /// `keep_files`, the file list is checked and counted but not kept
    /// (`files` is `None`), so memory stays flat however many files a set
    /// changed. A line longer than [`MAX_LINE`] is an error.
    pub fn read(r: impl BufRead, keep_files: bool) -> Result<Manifest> {
        let mut m = Manifest::default();
        let mut current: Option<Pending> = None;
        let mut last_number = None;
        let mut in_filelist: Option<(usize, usize)> = None; // (line of "Filelist", declared count)
        let mut listed = 0usize;
        let mut r = r.take(0);
        let mut buf = Vec::new();
        let mut lno = 0;
        loop {
            buf.clear();
            r.set_limit(MAX_LINE as u64 + 1);
            let n = r.read_until(b'\n', &mut buf).map_err(|e| {
                crate::error::carried(e).unwrap_or_else(|e| Error::corrupt(format!("reading the manifest: {e}")))
            })?;
            if n == 0 {
                break;
            }
            lno += 1;
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            if line.len() > MAX_LINE {
                return Err(Error::corrupt(format!("manifest line {lno}: longer than {MAX_LINE} bytes")));
            }
            let err = |what: &str| corrupt(lno, what, line);
            if let Some(v) = keyword_value(line, b"hostname") {
                if m.hostname.is_none() {
                    let v = unquote(v).map_err(|e| err(&e))?;
                    m.hostname = Some(String::from_utf8(v).map_err(|_| err("host name is not UTF-8"))?);
                }
                continue;
            }
            if let Some(v) = keyword_value(line, b"localdir") {
                if m.localdir.is_none() {
                    m.localdir = Some(unquote(v).map_err(|e| err(&e))?);
                }
                continue;
            }
            if keyword_value(line, b"volume").is_some() {
                in_filelist = None;
                if let Some(v) = current.take() {
                    finish_volume(&mut m, v, &mut last_number)?;
                }
                current = Some(volume_start(line).ok_or_else(|| err("expected \"Volume N:\""))?);
                continue;
            }
            if let Some(v) = keyword_value(line, b"filelist") {
                let n = std::str::from_utf8(v).ok().and_then(|s| s.trim().parse().ok());
                let n = n.ok_or_else(|| err("expected \"Filelist N\""))?;
                m.files = keep_files.then(Vec::new);
                listed = 0;
                in_filelist = Some((lno, n));
                continue;
            }
            let tokens: Vec<&[u8]> = line.split(|b| is_space(*b)).filter(|t| !t.is_empty()).collect();
            let Some(first) = tokens.first() else { continue };
            if in_filelist.is_some() {
                let change = file_change(first, &tokens, &err)?;
                listed += 1;
                if let Some(files) = &mut m.files {
                    files.push(change);
                }
                continue;
            }
            if let Some(vol) = current.as_mut() {
                volume_line(vol, first, &tokens, &err)?;
            }
        }
        if let Some(v) = current.take() {
            finish_volume(&mut m, v, &mut last_number)?;
        }
        m.close(last_number, in_filelist.map(|(lno, n)| (lno, n, listed)))
    }

    /// The end of parsing: volumes numbered above the last block's
    /// (`last_number`) dropped; the file list (begun at line `lno`,
    /// declaring `n` files, `listed` found) checked.
    fn close(mut self, last_number: Option<u64>, filelist: Option<(usize, usize, usize)>) -> Result<Manifest> {
        if let Some(last) = last_number {
            self.volumes.retain(|&n, _| n <= last);
        }
        if let Some((lno, n, listed)) = filelist
            && listed != n
        {
            return Err(Error::corrupt(format!("manifest line {lno}: Filelist says {n} files but lists {listed}")));
        }
        Ok(self)
    }
}

/// A file list line (`first` and its other `tokens`): `new|changed|deleted PATH`.
fn file_change(first: &[u8], tokens: &[&[u8]], err: &dyn Fn(&str) -> Error) -> Result<FileChange> {
    let change = match first.to_ascii_lowercase().as_slice() {
        b"new" => Change::New,
        b"changed" => Change::Changed,
        b"deleted" => Change::Deleted,
        _ => return Err(err("expected new, changed or deleted")),
    };
    let path = unquote(&tokens[1..].concat()).map_err(|e| err(&e))?;
    if path.is_empty() {
        return Err(err("file list entry without a path"));
    }
    Ok(FileChange { change, path })
}

/// A line of a volume block: only `StartingPath`, `EndingPath` and `Hash`
/// lines count (the last `Hash` of a type wins).
fn volume_line(vol: &mut Pending, first: &[u8], tokens: &[&[u8]], err: &dyn Fn(&str) -> Error) -> Result<()> {
    match first.to_ascii_lowercase().as_slice() {
        kw @ (b"startingpath" | b"endingpath") => {
            let path = tokens.get(1).ok_or_else(|| err("path missing"))?;
            let idx = unquote(path).map_err(|e| err(&e))?;
            let block = match tokens.get(2) {
                None => None,
                Some(b) => Some(parse_u64(b).ok_or_else(|| err("bad block number"))?),
            };
            if kw == b"startingpath" {
                vol.start = Some((idx, block));
            } else {
                vol.end = Some((idx, block));
            }
        }
        b"hash" => {
            let (Some(k), Some(v)) = (tokens.get(1), tokens.get(2)) else {
                return Err(err("expected \"Hash TYPE HEX\""));
            };
            let k = String::from_utf8_lossy(k).into_owned();
            let v = String::from_utf8_lossy(v).into_owned();
            match vol.hashes.iter_mut().find(|(n, _)| *n == k) {
                Some(h) => h.1 = v,
                None => vol.hashes.push((k, v)),
            }
        }
        _ => {}
    }
    Ok(())
}

fn corrupt(lno: usize, what: &str, line: &[u8]) -> Error {
    let shown: String = String::from_utf8_lossy(line).chars().take(80).collect();
    Error::corrupt(format!("manifest line {lno}: {what}: {shown:?}"))
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The rest of `line` after `keyword` (any case) and one whitespace byte.
fn keyword_value<'a>(line: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let n = keyword.len();
    (line.len() > n && line[..n].eq_ignore_ascii_case(keyword) && is_space(line[n])).then(|| &line[n + 1..])
}

/// A volume block being read.
struct Pending {
    number: u64,
    start: Option<(Vec<u8>, Option<u64>)>,
    end: Option<(Vec<u8>, Option<u64>)>,
    hashes: Vec<(String, String)>,
}

/// `Volume N:` (any case) → an empty block numbered N.
fn volume_start(line: &[u8]) -> Option<Pending> {
    let rest = keyword_value(line, b"volume").filter(|_| line[6] == b' ')?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if rest.get(digits) != Some(&b':') {
        return None;
    }
    let number = parse_u64(&rest[..digits])?;
    Some(Pending { number, start: None, end: None, hashes: Vec::new() })
}

fn finish_volume(m: &mut Manifest, v: Pending, last: &mut Option<u64>) -> Result<()> {
    let (Some((start, start_block)), Some((end, end_block))) = (v.start, v.end) else {
        return Err(Error::corrupt(format!("manifest: volume {} lacks StartingPath or EndingPath", v.number)));
    };
    *last = Some(v.number);
    m.volumes.insert(v.number, VolumeInfo { number: v.number, start, start_block, end, end_block, hashes: v.hashes });
    Ok(())
}

/// `Hostname`/`Localdir` lines (each omitted when empty).
pub fn header_bytes(hostname: &str, localdir: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if !hostname.is_empty() {
        out.extend_from_slice(b"Hostname ");
        out.extend_from_slice(hostname.as_bytes());
        out.push(b'\n');
    }
    if !localdir.is_empty() {
        out.extend_from_slice(b"Localdir ");
        out.extend_from_slice(&quote(localdir));
        out.push(b'\n');
    }
    out
}

/// The `Filelist` block.
pub fn filelist_bytes(files: &[FileChange]) -> Vec<u8> {
    let mut out = filelist_head(files.len() as u64);
    for f in files {
        out.extend_from_slice(&filelist_line(f.change, &f.path));
    }
    out
}

/// The `Filelist N` line that begins the block.
pub fn filelist_head(n: u64) -> Vec<u8> {
    format!("Filelist {n}\n").into_bytes()
}

/// One line of the `Filelist` block (after its `Filelist N` line).
pub fn filelist_line(change: Change, path: &[u8]) -> Vec<u8> {
    let mut out = format!("    {:<7}  ", change.as_str()).into_bytes();
    out.extend_from_slice(&quote(path));
    out.push(b'\n');
    out
}

fn needs_quote(b: u8) -> bool {
    is_space(b) || matches!(b, b'\\' | b'"' | b'\'')
}

/// Quotes a path for a manifest (§2.3): raw unless it holds whitespace, `\`,
/// `"` or `'`; then each of those becomes `\xNN` and the whole is put in
/// double quotes.
pub fn quote(s: &[u8]) -> Vec<u8> {
    if !s.iter().any(|&b| needs_quote(b)) {
        return s.to_vec();
    }
    let mut out = Vec::with_capacity(s.len() + 8);
    out.push(b'"');
    for &b in s {
        if needs_quote(b) {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out.push(b'"');
    out
}

/// Inverse of [`quote`]: a field starting with `"` must end with `"` and may
/// contain `\xNN`; any other field is literal.
pub fn unquote(s: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let Some(inner) = s.strip_prefix(b"\"") else {
        return Ok(s.to_vec());
    };
    let inner = inner.strip_suffix(b"\"").ok_or("quoted field without closing quote")?;
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'\\' {
            let hex = inner.get(i + 1..i + 4).filter(|h| h[0] == b'x').ok_or("bad \\x escape")?;
            let v = std::str::from_utf8(&hex[1..]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(v.ok_or("bad \\x escape")?);
            i += 4;
        } else {
            out.push(inner[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dup-plain's full manifest shape (§2.1), with raw non-UTF-8 bytes.
    fn sample() -> Vec<u8> {
        let mut s = b"Hostname vm\nLocaldir /fixtures/src\n".to_vec();
        s.extend_from_slice(
            b"Volume 1:\n    StartingPath   .  \n    EndingPath     big.bin 15\n    \
              Hash SHA1 ed36b4b5912dc8b2a8340cda6393a08689fc6a16\n",
        );
        s.extend_from_slice(
            b"Volume 2:\n    StartingPath   big.bin 16\n    EndingPath     \xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9.txt  \n    \
              Hash SHA1 6d544ffb2f9e1582e736596a698fbd475b6b11bb\n",
        );
        s.extend_from_slice(b"Filelist 4\n    new      a.txt\n    changed  caf\xe9.txt\n");
        s.extend_from_slice(b"    new      \"dir1/file\\x20with\\x20space.txt\"\n    deleted  dir1/nested/deep.txt\n");
        s
    }

    #[test]
    fn parse_and_write_back() {
        let m = Manifest::parse(&sample()).unwrap();
        assert_eq!(m.hostname.as_deref(), Some("vm"));
        assert_eq!(m.localdir.as_deref(), Some(&b"/fixtures/src"[..]));
        assert_eq!(m.volumes.len(), 2);
        let v1 = &m.volumes[&1];
        assert_eq!(
            (v1.start.as_slice(), v1.start_block, v1.end.as_slice(), v1.end_block),
            (&b"."[..], None, &b"big.bin"[..], Some(15))
        );
        assert_eq!(v1.best_hash(), Some(("SHA1", "ed36b4b5912dc8b2a8340cda6393a08689fc6a16")));
        let files = m.files.as_ref().unwrap();
        assert_eq!(files.len(), 4);
        assert_eq!(files[1], FileChange { change: Change::Changed, path: b"caf\xe9.txt".to_vec() });
        assert_eq!(files[2].path, b"dir1/file with space.txt");
        assert_eq!(m.to_bytes(), sample());
    }

    /// Read without the file list: the same volumes, the list checked and
    /// counted but not kept; every parse error still found.
    #[test]
    fn read_without_the_file_list() {
        let full = Manifest::parse(&sample()).unwrap();
        let m = Manifest::read(&sample()[..], false).unwrap();
        assert_eq!((&m.hostname, &m.localdir, &m.volumes), (&full.hostname, &full.localdir, &full.volumes));
        assert_eq!(m.files, None);
        for bad in [&b"Filelist 2\n    new      a\n"[..], b"Filelist 1\n    moved    a\n"] {
            assert!(Manifest::read(bad, false).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let mut long = b"Volume 1:\n StartingPath ".to_vec();
        long.resize(long.len() + MAX_LINE + 10, b'a');
        let e = Manifest::read(&long[..], false).unwrap_err();
        assert!(e.message.contains("line 2: longer than"), "{}", e.message);
    }

    #[test]
    fn streamed_pieces() {
        let v = VolumeInfo::new(4, b"big.bin", None, b"a b/c", Some(7), "AB12");
        assert_eq!(
            v.to_bytes(),
            b"Volume 4:\n    StartingPath   big.bin  \n    EndingPath     \"a\\x20b/c\" 7\n    Hash SHA1 ab12\n"
        );
        assert_eq!(header_bytes("", b""), b"");
        assert_eq!(header_bytes("h", b"my dir"), b"Hostname h\nLocaldir \"my\\x20dir\"\n");
        assert_eq!(filelist_bytes(&[]), b"Filelist 0\n");
        let root = VolumeInfo::new(1, b".", None, b".", None, "00");
        assert!(root.to_bytes().starts_with(b"Volume 1:\n    StartingPath   .  \n    EndingPath     .  \n"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(b"plain/caf\xe9"), b"plain/caf\xe9");
        assert_eq!(quote(b"a b\tc\\d\"e'f\x0b\x0c\r\n"), b"\"a\\x20b\\x09c\\x5cd\\x22e\\x27f\\x0b\\x0c\\x0d\\x0a\"");
        for s in [&b"x y"[..], b"\"", b"'", b"\\x20", b"\x01\x7f\xff", b""] {
            assert_eq!(unquote(&quote(s)).unwrap(), s);
        }
        assert_eq!(unquote(b"'a'").unwrap(), b"'a'");
        assert!(unquote(b"\"abc").is_err());
        assert!(unquote(b"\"a\\x2\"").is_err());
        assert!(unquote(b"\"a\\y20\"").is_err());
        assert!(unquote(b"\"").is_err());
        assert_eq!(unquote(b"\"\"").unwrap(), b"");
    }

    #[test]
    fn tolerances() {
        // Resumed backup: Volume 2 repeated (later wins), higher numbers dropped;
        // keywords in any case; MD5 hashes; Filelist before the volumes.
        let text = b"hOSTNAME box\nFilelist 1\n    new      x\n\
            volume 1:\n  startingpath . \n  ENDINGPATH a 3\n  hash MD5 aa\n\
            Volume 2:\n  StartingPath a 4\n  EndingPath b\n  Hash SHA1 11\n\
            Volume 3:\n  StartingPath b\n  EndingPath c\n  Hash SHA1 22\n\
            Volume 2:\n  StartingPath a 4\n  EndingPath b\n  Hash SHA1 33\n  Unknown line\n";
        let m = Manifest::parse(text).unwrap();
        assert_eq!(m.hostname.as_deref(), Some("box"));
        assert_eq!(m.localdir, None);
        assert_eq!(m.volumes.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(m.volumes[&1].best_hash(), Some(("MD5", "aa")));
        assert_eq!(m.volumes[&2].best_hash(), Some(("SHA1", "33")));
        assert_eq!(m.files.as_ref().map(Vec::len), Some(1));
        // No Filelist (older manifests), no final LF.
        let m = Manifest::parse(b"Volume 1:\n StartingPath .\n EndingPath .").unwrap();
        assert_eq!(m.files, None);
        assert_eq!(m.volumes[&1].end, b".");
        assert_eq!(Manifest::parse(b"").unwrap(), Manifest::default());
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&[u8], &str)] = &[
            (b"Volume x:\n", "line 1"),
            (b"Hostname vm\nVolume 1:\n StartingPath .\n", "volume 1 lacks"),
            (b"Volume 1:\n StartingPath\n EndingPath .\n", "line 2"),
            (b"Volume 1:\n StartingPath . x\n EndingPath .\n", "line 2"),
            (b"Volume 1:\n StartingPath \"abc\n EndingPath .\n", "line 2"),
            (b"Volume 1:\n StartingPath .\n EndingPath .\n Hash SHA1\n", "line 4"),
            (b"Filelist 2\n    new      a\n", "line 1"),
            (b"Filelist x\n", "line 1"),
            (b"Filelist 1\n    moved    a\n", "line 2"),
            (b"Hostname \"\xff\"\n", "line 1"),
        ];
        for (text, want) in cases {
            let e = Manifest::parse(text).unwrap_err();
            assert_eq!(e.kind, crate::error::Kind::Corrupt);
            assert!(e.message.contains(want), "{:?}: {}", String::from_utf8_lossy(text), e.message);
        }
    }

    #[test]
    fn volume_selection() {
        let m = Manifest::parse(&sample()).unwrap();
        assert_eq!(m.volumes_for(b"."), vec![1, 2]);
        assert_eq!(m.volumes_for(b"big.bin"), vec![1, 2]);
        assert_eq!(m.volumes_for(b"a.txt"), vec![1]);
        assert_eq!(m.volumes_for(b"dir1"), vec![2]);
        assert_eq!(m.volumes_for(b"\xff"), Vec::<u64>::new());
        // Component-wise: "a b" sorts after "a/z".
        let v = VolumeInfo::new(1, b"a/b", None, b"a/z", None, "");
        assert!(v.contains(b"a"));
        assert!(v.contains(b"a/c"));
        assert!(!v.contains(b"a b"));
        assert!(!v.contains(b"a/a"));
        assert!(v.contains(b"."));
    }

    #[test]
    fn malformed_never_panics() {
        let base = sample();
        for cut in 0..base.len() {
            let _ = Manifest::parse(&base[..cut]);
            let mut v = base.clone();
            v[cut] = b'"';
            let _ = Manifest::parse(&v);
            v[cut] = b'\\';
            let _ = Manifest::parse(&v);
        }
    }
}
