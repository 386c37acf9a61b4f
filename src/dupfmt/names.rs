//! Names of the files duplicity stores (FORMAT-duplicity.md §1.1–1.6):
//! volumes, manifests and signatures, long or short, with optional prefixes.
//!
//! Recognition follows duplicity: patterns are anchored at the start of the
//! name (prefixes included); short patterns are tried first and long ones
//! only when not in `--short-filenames` mode; kinds are tried in the order
//! full (volume, manifest), incremental, full-sig, new-sig; a time field is
//! the shortest text before the next literal part; anything after the type
//! token (and partial marker) that starts with `.` is suffix.

use std::sync::OnceLock;

use regex::Regex;

use super::time;

/// The naming options of a run (`--file-prefix*`, `--short-filenames`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameOptions {
    /// `--file-prefix`: before every name.
    pub prefix: String,
    /// `--file-prefix-archive`: after `prefix`, for volumes.
    pub prefix_archive: String,
    /// `--file-prefix-manifest`: after `prefix`, for manifests.
    pub prefix_manifest: String,
    /// `--file-prefix-signature`: after `prefix`, for signatures.
    pub prefix_signature: String,
    /// `--short-filenames`: only short names are recognised, and only `.g`/`.z`
    /// count as suffixes.
    pub short: bool,
}

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Volume `n` (1-based) of a full set.
    FullVolume(u64),
    FullManifest,
    /// Volume `n` of an incremental set.
    IncVolume(u64),
    IncManifest,
    /// Full signature (`duplicity-full-signatures`).
    FullSig,
    /// Incremental signature (`duplicity-new-signatures`).
    NewSig,
}

/// The container suffix, derived from the end of the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Suffix {
    #[default]
    None,
    /// `.gz` (`.z` short).
    Gzip,
    /// `.gpg` (`.g` short).
    Gpg,
}

/// A parsed (or to be formatted) duplicity file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileName {
    pub kind: FileKind,
    /// Start time: T1 of incrementals and new-sigs; T for fulls.
    pub start: i64,
    /// End time: T2 of incrementals and new-sigs; T for fulls.
    pub end: i64,
    pub suffix: Suffix,
    /// `.part`/`.p` (recognised on manifests and signatures only).
    pub partial: bool,
    /// Short form (`df.`, `di.`, `dfs.`, `dns.`; base-36 numbers).
    pub short: bool,
}

impl FileName {
    /// A name of the given kind; `start` is ignored (set to `end`) for fulls.
    pub fn new(kind: FileKind, start: i64, end: i64, suffix: Suffix) -> Self {
        let start = if kind.is_full() { end } else { start };
        FileName { kind, start, end, suffix, partial: false, short: false }
    }

    /// The time a set or signature file is sorted by (T of a full, T2 otherwise).
    pub fn time(&self) -> i64 {
        self.end
    }

    pub fn is_volume(&self) -> bool {
        self.volume().is_some()
    }

    pub fn volume(&self) -> Option<u64> {
        match self.kind {
            FileKind::FullVolume(n) | FileKind::IncVolume(n) => Some(n),
            _ => None,
        }
    }

    pub fn is_manifest(&self) -> bool {
        matches!(self.kind, FileKind::FullManifest | FileKind::IncManifest)
    }

    pub fn is_signature(&self) -> bool {
        matches!(self.kind, FileKind::FullSig | FileKind::NewSig)
    }

    pub fn encrypted(&self) -> bool {
        self.suffix == Suffix::Gpg
    }

    pub fn compressed(&self) -> bool {
        self.suffix == Suffix::Gzip
    }

    /// The plain manifest of this file's set (as the cache names it).
    pub fn set_manifest(&self) -> FileName {
        let kind = if self.kind.is_full() { FileKind::FullManifest } else { FileKind::IncManifest };
        FileName { kind, suffix: Suffix::None, partial: false, ..*self }
    }

    /// Whether `other` is a file of the same backup set: both of a full or
    /// both of an incremental (signatures included), with the same times.
    pub fn same_set(&self, other: &FileName) -> bool {
        self.kind.is_full() == other.kind.is_full() && (self.start, self.end) == (other.start, other.end)
    }
}

impl FileKind {
    /// Full set or full signature.
    pub fn is_full(self) -> bool {
        matches!(self, FileKind::FullVolume(_) | FileKind::FullManifest | FileKind::FullSig)
    }

    /// duplicity's type word: `full`, `inc`, `full-sig`, `new-sig`.
    pub fn type_name(self) -> &'static str {
        match self {
            FileKind::FullVolume(_) | FileKind::FullManifest => "full",
            FileKind::IncVolume(_) | FileKind::IncManifest => "inc",
            FileKind::FullSig => "full-sig",
            FileKind::NewSig => "new-sig",
        }
    }
}

/// Lowercase base 36 without padding (short names).
pub fn to_base36(mut n: u64) -> String {
    let mut out = Vec::new();
    loop {
        let d = (n % 36) as u8;
        out.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Inverse of [`to_base36`]; `None` on other characters or overflow.
pub fn from_base36(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |acc, c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'z' => c - b'a' + 10,
            _ => return None,
        };
        acc.checked_mul(36)?.checked_add(u64::from(d))
    })
}

/// Which prefix (after `--file-prefix`) a pattern's files carry.
#[derive(Clone, Copy)]
enum Role {
    Archive,
    Manifest,
    Signature,
}

struct Patterns {
    full_vol: Regex,
    full_manifest: Regex,
    inc_vol: Regex,
    inc_manifest: Regex,
    full_sig: Regex,
    new_sig: Regex,
}

impl Patterns {
    fn new(short: bool) -> Patterns {
        // Time fields are lazy; numbers are decimal (long) or base 36 (short).
        let (t, n) = if short { ("[0-9a-z]+?", "[0-9a-z]+") } else { (".*?", "[0-9]+") };
        let part = if short { r"(?P<partial>\.p)?" } else { r"(?P<partial>\.part)?" };
        // The patterns are constant; the tests compile every one of them.
        let re = |body: String| Regex::new(&format!("^{body}(?:$|\\.)")).expect("constant file name pattern");
        if short {
            Patterns {
                full_vol: re(format!(r"df\.(?P<t>{t})\.(?P<n>{n})\.dt{part}")),
                full_manifest: re(format!(r"df\.(?P<t>{t})\.m{part}")),
                inc_vol: re(format!(r"di\.(?P<t1>{t})\.(?P<t2>{t})\.(?P<n>{n})\.dt")),
                inc_manifest: re(format!(r"di\.(?P<t1>{t})\.(?P<t2>{t})\.m{part}")),
                full_sig: re(format!(r"dfs\.(?P<t>{t})\.st{part}")),
                new_sig: re(format!(r"dns\.(?P<t1>{t})\.(?P<t2>{t})\.st{part}")),
            }
        } else {
            Patterns {
                full_vol: re(format!(r"duplicity-full\.(?P<t>{t})\.vol(?P<n>{n})\.difftar{part}")),
                full_manifest: re(format!(r"duplicity-full\.(?P<t>{t})\.manifest{part}")),
                inc_vol: re(format!(r"duplicity-inc\.(?P<t1>{t})\.to\.(?P<t2>{t})\.vol(?P<n>{n})\.difftar")),
                inc_manifest: re(format!(r"duplicity-inc\.(?P<t1>{t})\.to\.(?P<t2>{t})\.manifest{part}")),
                full_sig: re(format!(r"duplicity-full-signatures\.(?P<t>{t})\.sigtar{part}")),
                new_sig: re(format!(r"duplicity-new-signatures\.(?P<t1>{t})\.to\.(?P<t2>{t})\.sigtar{part}")),
            }
        }
    }

    /// The short (`true`) and long patterns, compiled once.
    fn get(short: bool) -> &'static Patterns {
        static SHORT: OnceLock<Patterns> = OnceLock::new();
        static LONG: OnceLock<Patterns> = OnceLock::new();
        if short { SHORT.get_or_init(|| Patterns::new(true)) } else { LONG.get_or_init(|| Patterns::new(false)) }
    }
}

/// Parses and formats names under one set of [`NameOptions`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Naming {
    opts: NameOptions,
}

impl Naming {
    pub fn new(opts: NameOptions) -> Naming {
        Naming { opts }
    }

    pub fn options(&self) -> &NameOptions {
        &self.opts
    }

    /// Classifies a name; `None` when duplicity would ignore the file.
    pub fn parse(&self, name: &str) -> Option<FileName> {
        let mut f = self.parse_kind(name)?;
        let long_ok = !self.opts.short;
        f.suffix = if name.ends_with(".z") || (long_ok && name.ends_with("gz")) {
            Suffix::Gzip
        } else if name.ends_with(".g") || (long_ok && name.ends_with(".gpg")) {
            Suffix::Gpg
        } else {
            Suffix::None
        };
        Some(f)
    }

    /// The name without `--file-prefix` and the role's own prefix.
    fn strip<'a>(&self, name: &'a str, role: Role) -> Option<&'a str> {
        let o = &self.opts;
        let own = match role {
            Role::Archive => &o.prefix_archive,
            Role::Manifest => &o.prefix_manifest,
            Role::Signature => &o.prefix_signature,
        };
        name.strip_prefix(o.prefix.as_str())?.strip_prefix(own.as_str())
    }

    /// Tries the given patterns in short form, then (unless short mode) in
    /// long form; returns (short, which pattern, captures).
    fn pick<'a>(
        &self,
        name: &'a str,
        get: impl Fn(&'static Patterns) -> [(&'static Regex, Role); 2],
    ) -> Option<(bool, usize, regex::Captures<'a>)> {
        let forms: &[bool] = if self.opts.short { &[true] } else { &[true, false] };
        for &short in forms {
            for (i, (re, role)) in get(Patterns::get(short)).into_iter().enumerate() {
                if let Some(c) = self.strip(name, role).and_then(|rest| re.captures(rest)) {
                    return Some((short, i, c));
                }
            }
        }
        None
    }

    fn parse_kind(&self, name: &str) -> Option<FileName> {
        let time = |short: bool, s: &str| -> Option<i64> {
            let t = if short { i64::try_from(from_base36(s)?).ok()? } else { time::parse_name_time(s)? };
            (t != 0).then_some(t)
        };
        let num = |short: bool, s: &str| -> Option<u64> {
            let n = if short { from_base36(s)? } else { s.parse().ok()? };
            (n != 0).then_some(n)
        };
        let partial = |c: &regex::Captures| c.name("partial").is_some();
        let mk = |kind, start, end, partial, short| FileName { kind, start, end, suffix: Suffix::None, partial, short };
        use Role::*;

        // Full: a volume match wins over a manifest match.
        if let Some((short, i, c)) = self.pick(name, |p| [(&p.full_vol, Archive), (&p.full_manifest, Manifest)])
            && let Some(t) = time(short, &c["t"])
        {
            return if i == 0 {
                Some(mk(FileKind::FullVolume(num(short, &c["n"])?), t, t, false, short))
            } else {
                Some(mk(FileKind::FullManifest, t, t, partial(&c), short))
            };
        }
        if let Some((short, i, c)) = self.pick(name, |p| [(&p.inc_vol, Archive), (&p.inc_manifest, Manifest)])
            && let (Some(t1), Some(t2)) = (time(short, &c["t1"]), time(short, &c["t2"]))
        {
            return if i == 0 {
                Some(mk(FileKind::IncVolume(num(short, &c["n"])?), t1, t2, false, short))
            } else {
                Some(mk(FileKind::IncManifest, t1, t2, partial(&c), short))
            };
        }
        // A full-sig match with a bad time ends the search (as in duplicity).
        if let Some((short, _, c)) = self.pick(name, |p| [(&p.full_sig, Signature), (&p.full_sig, Signature)]) {
            let t = time(short, &c["t"])?;
            return Some(mk(FileKind::FullSig, t, t, partial(&c), short));
        }
        if let Some((short, _, c)) = self.pick(name, |p| [(&p.new_sig, Signature), (&p.new_sig, Signature)]) {
            let (t1, t2) = (time(short, &c["t1"])?, time(short, &c["t2"])?);
            return Some(mk(FileKind::NewSig, t1, t2, partial(&c), short));
        }
        None
    }

    /// The name of a file, with this run's prefixes; long or short as
    /// `f.short` says. Times are written in compact UTC (long) or base 36.
    pub fn format(&self, f: &FileName) -> String {
        let o = &self.opts;
        let t = |v: i64| {
            if f.short { to_base36(v.max(0) as u64) } else { time::to_compact(v) }
        };
        let n = |v: u64| if f.short { to_base36(v) } else { v.to_string() };
        let part = match (f.partial, f.short) {
            (false, _) => "",
            (true, false) => ".part",
            (true, true) => ".p",
        };
        let sfx = match (f.suffix, f.short) {
            (Suffix::None, _) => "",
            (Suffix::Gzip, false) => ".gz",
            (Suffix::Gzip, true) => ".z",
            (Suffix::Gpg, false) => ".gpg",
            (Suffix::Gpg, true) => ".g",
        };
        let (t1, t2) = (t(f.start), t(f.end));
        let (kind_prefix, body) = match (f.kind, f.short) {
            (FileKind::FullVolume(v), false) => (&o.prefix_archive, format!("duplicity-full.{t2}.vol{}.difftar", n(v))),
            (FileKind::FullVolume(v), true) => (&o.prefix_archive, format!("df.{t2}.{}.dt", n(v))),
            (FileKind::FullManifest, false) => (&o.prefix_manifest, format!("duplicity-full.{t2}.manifest")),
            (FileKind::FullManifest, true) => (&o.prefix_manifest, format!("df.{t2}.m")),
            (FileKind::IncVolume(v), false) => {
                (&o.prefix_archive, format!("duplicity-inc.{t1}.to.{t2}.vol{}.difftar", n(v)))
            }
            (FileKind::IncVolume(v), true) => (&o.prefix_archive, format!("di.{t1}.{t2}.{}.dt", n(v))),
            (FileKind::IncManifest, false) => (&o.prefix_manifest, format!("duplicity-inc.{t1}.to.{t2}.manifest")),
            (FileKind::IncManifest, true) => (&o.prefix_manifest, format!("di.{t1}.{t2}.m")),
            (FileKind::FullSig, false) => (&o.prefix_signature, format!("duplicity-full-signatures.{t2}.sigtar")),
            (FileKind::FullSig, true) => (&o.prefix_signature, format!("dfs.{t2}.st")),
            (FileKind::NewSig, false) => (&o.prefix_signature, format!("duplicity-new-signatures.{t1}.to.{t2}.sigtar")),
            (FileKind::NewSig, true) => (&o.prefix_signature, format!("dns.{t1}.{t2}.st")),
        };
        format!("{}{kind_prefix}{body}{part}{sfx}", o.prefix)
    }

    /// A new name of this run's form (short when `--short-filenames`).
    pub fn name(&self, kind: FileKind, start: i64, end: i64, suffix: Suffix, partial: bool) -> String {
        let mut f = FileName::new(kind, start, end, suffix);
        f.partial = partial;
        f.short = self.opts.short;
        self.format(&f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_665_570; // 20261126T035930Z
    const T2: i64 = 1_795_665_619; // 20261126T040019Z

    fn long() -> Naming {
        Naming::default()
    }

    #[test]
    fn base36() {
        assert_eq!(to_base36(1_795_665_687), "tp3cif");
        assert_eq!(from_base36("tp3cif"), Some(1_795_665_687));
        assert_eq!(to_base36(0), "0");
        assert_eq!(to_base36(35), "z");
        assert_eq!(from_base36("A"), None);
        assert_eq!(from_base36("zzzzzzzzzzzzzzzzzzzzzzzzzzzzz"), None);
        for n in [1u64, 36, 1295, 1296, u64::MAX] {
            assert_eq!(from_base36(&to_base36(n)), Some(n));
        }
    }

    #[test]
    fn spec_examples_long() {
        let n = long();
        let cases: &[(&str, FileKind, i64, i64, Suffix, bool)] = &[
            ("duplicity-full.20261126T035930Z.vol1.difftar.gz", FileKind::FullVolume(1), T, T, Suffix::Gzip, false),
            ("duplicity-full.20261126T035930Z.vol12.difftar.gpg", FileKind::FullVolume(12), T, T, Suffix::Gpg, false),
            ("duplicity-full.20261126T035930Z.vol3.difftar", FileKind::FullVolume(3), T, T, Suffix::None, false),
            ("duplicity-full.20261126T035930Z.manifest", FileKind::FullManifest, T, T, Suffix::None, false),
            ("duplicity-full.20261126T035930Z.manifest.gpg", FileKind::FullManifest, T, T, Suffix::Gpg, false),
            ("duplicity-full.20261126T035930Z.manifest.part", FileKind::FullManifest, T, T, Suffix::None, true),
            (
                "duplicity-inc.20261126T035930Z.to.20261126T040019Z.vol1.difftar.gz",
                FileKind::IncVolume(1),
                T,
                T2,
                Suffix::Gzip,
                false,
            ),
            (
                "duplicity-inc.20261126T035930Z.to.20261126T040019Z.manifest.part",
                FileKind::IncManifest,
                T,
                T2,
                Suffix::None,
                true,
            ),
            ("duplicity-full-signatures.20261126T035930Z.sigtar.gz", FileKind::FullSig, T, T, Suffix::Gzip, false),
            ("duplicity-full-signatures.20261126T035930Z.sigtar.part", FileKind::FullSig, T, T, Suffix::None, true),
            (
                "duplicity-new-signatures.20261126T035930Z.to.20261126T040019Z.sigtar.gpg",
                FileKind::NewSig,
                T,
                T2,
                Suffix::Gpg,
                false,
            ),
        ];
        for &(name, kind, start, end, suffix, partial) in cases {
            let f = n.parse(name).unwrap_or_else(|| panic!("{name} not recognised"));
            assert_eq!(
                (f.kind, f.start, f.end, f.suffix, f.partial, f.short),
                (kind, start, end, suffix, partial, false),
                "{name}"
            );
            assert_eq!(n.format(&f), name);
        }
    }

    #[test]
    fn short_names() {
        let t = 1_795_665_687; // tp3cif
        let t2 = from_base36("tp3cih").unwrap() as i64;
        for mode in [long(), Naming::new(NameOptions { short: true, ..Default::default() })] {
            let cases: &[(&str, FileKind, i64, Suffix, bool)] = &[
                ("df.tp3cif.1.dt.z", FileKind::FullVolume(1), t, Suffix::Gzip, false),
                ("df.tp3cif.a.dt.g", FileKind::FullVolume(10), t, Suffix::Gpg, false),
                ("df.tp3cif.m", FileKind::FullManifest, t, Suffix::None, false),
                ("df.tp3cif.m.p", FileKind::FullManifest, t, Suffix::None, true),
                ("dfs.tp3cif.st.z", FileKind::FullSig, t, Suffix::Gzip, false),
                ("di.tp3cif.tp3cih.1.dt.z", FileKind::IncVolume(1), t2, Suffix::Gzip, false),
                ("di.tp3cif.tp3cih.m", FileKind::IncManifest, t2, Suffix::None, false),
                ("dns.tp3cif.tp3cih.st.z", FileKind::NewSig, t2, Suffix::Gzip, false),
                ("dns.tp3cif.tp3cih.st.p", FileKind::NewSig, t2, Suffix::None, true),
            ];
            for &(name, kind, end, suffix, partial) in cases {
                let f = mode.parse(name).unwrap_or_else(|| panic!("{name} not recognised"));
                assert_eq!((f.kind, f.end, f.suffix, f.partial, f.short), (kind, end, suffix, partial, true), "{name}");
                assert_eq!(f.start, t, "{name}");
                assert_eq!(mode.format(&f), name);
            }
        }
        // Short mode does not see long names, nor long suffixes.
        let short = Naming::new(NameOptions { short: true, ..Default::default() });
        assert_eq!(short.parse("duplicity-full.20261126T035930Z.manifest"), None);
        assert_eq!(short.parse("df.tp3cif.1.dt.gz").map(|f| f.suffix), Some(Suffix::None));
        assert_eq!(long().parse("df.tp3cif.1.dt.gz").map(|f| f.suffix), Some(Suffix::Gzip));
        assert_eq!(short.name(FileKind::NewSig, t, t2, Suffix::Gzip, true), "dns.tp3cif.tp3cih.st.p.z");
    }

    #[test]
    fn prefixes() {
        let o = NameOptions {
            prefix: "P_".into(),
            prefix_archive: "A_".into(),
            prefix_manifest: "M_".into(),
            prefix_signature: "S_".into(),
            short: false,
        };
        let n = Naming::new(o.clone());
        for name in [
            "P_A_duplicity-full.20261126T040623Z.vol1.difftar.gz",
            "P_M_duplicity-full.20261126T040623Z.manifest",
            "P_S_duplicity-full-signatures.20261126T040623Z.sigtar.gz",
        ] {
            let f = n.parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(n.format(&f), name);
            assert_eq!(long().parse(name), None, "{name} seen without prefixes");
        }
        // A prefix belongs to its kind only; regex characters are literal.
        assert_eq!(n.parse("P_M_duplicity-full.20261126T040623Z.vol1.difftar.gz"), None);
        let dots = Naming::new(NameOptions { prefix: "a.b*".into(), ..Default::default() });
        assert!(dots.parse("a.b*duplicity-full.20261126T040623Z.manifest").is_some());
        assert!(dots.parse("aXbbduplicity-full.20261126T040623Z.manifest").is_none());
        assert_eq!(
            n.name(FileKind::IncManifest, T, T2, Suffix::Gpg, false),
            "P_M_duplicity-inc.20261126T035930Z.to.20261126T040019Z.manifest.gpg"
        );
    }

    #[test]
    fn odd_names() {
        let n = long();
        for name in [
            "unrelated.txt",
            "duplicity-full..vol1.difftar.gz",
            "duplicity-full.20261126T035930Z.vol0.difftar.gz",
            "duplicity-full.20261126T035930Z.volx.difftar.gz",
            "duplicity-full.garbage.manifest",
            "duplicity-full.20261126T035930Z.difftarX",
            "duplicity-full.20261126T035930Z.manifestX",
            "duplicity-inc.20261126T035930Z.vol1.difftar.gz",
            "xduplicity-full.20261126T035930Z.manifest",
            "duplicity-full.0.manifest",
            "df.0.m",
            "",
        ] {
            assert_eq!(n.parse(name), None, "{name:?}");
        }
        // Legacy and integer times; anything after a dot is suffix.
        let f = n.parse("duplicity-full.2002-04-26T04:22:01-07:00.vol1.difftar.gpg").unwrap();
        assert_eq!((f.kind, f.end, f.suffix), (FileKind::FullVolume(1), 1_019_820_121, Suffix::Gpg));
        let f = n.parse("duplicity-full.1700000000.manifest.whatever").unwrap();
        assert_eq!((f.kind, f.end, f.suffix), (FileKind::FullManifest, 1_700_000_000, Suffix::None));
        // "gz" without a dot still counts as compressed in long mode.
        assert_eq!(n.parse("duplicity-full.1700000000.manifest.xgz").unwrap().suffix, Suffix::Gzip);
        // Volumes never carry the partial flag.
        let f = n.parse("duplicity-full.20261126T035930Z.vol1.difftar.part").unwrap();
        assert_eq!((f.kind, f.partial), (FileKind::FullVolume(1), false));
        // A full-sig with a bad time is not retried as anything else.
        assert_eq!(n.parse("duplicity-full-signatures.bad.sigtar.gz"), None);
        // Lower-case times are upper-cased first.
        assert_eq!(n.parse("duplicity-full.20261126t035930z.manifest").unwrap().end, T);
    }
}
