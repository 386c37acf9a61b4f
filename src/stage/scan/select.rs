//! Duplicity 0.8's file selection: the `--include`/`--exclude` family of
//! options, tried in command-line order, the first that says include or
//! exclude winning; a path no option speaks about is included.
//!
//! Paths are matched the way duplicity names them: the source directory as
//! given on the command line (see [`canonical`]) joined with the path inside
//! it by `/`, decoded as UTF-8 with U+FFFD for bytes that are not. So globs
//! start with the source path as given (`--exclude /src/dir` for `/src`,
//! `--exclude src/dir` for `src`), or with `**`.
//!
//! Glob rules (duplicity 0.8): `**` matches any characters including `/`;
//! `*` and `?` do not match `/`; `[...]` and `[!...]` are character classes.
//! A glob matches a path and everything under it. An include glob also
//! selects the directories leading to what it could match for scanning
//! ([`Verdict::Scan`]); such a directory is kept only if something inside it
//! is. A glob ending in `/` matches directories only.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use regex::Regex;

use crate::dupfmt::time;
use crate::error::{Error, Result};
use crate::record::FileType;

/// What a rule, or the whole selection, says about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Exclude,
    Include,
    /// A directory to walk; it is kept only if something inside it is.
    Scan,
}

/// A selection option as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opt {
    Include(String),
    Exclude(String),
    IncludeRegexp(String),
    ExcludeRegexp(String),
    /// A file of globs, one a line, `+ `/`- ` prefixes overriding the default.
    IncludeFilelist(Filelist),
    ExcludeFilelist(Filelist),
    /// Excludes a directory that contains an entry of this name.
    ExcludeIfPresent(Vec<u8>),
    ExcludeOtherFilesystems,
    ExcludeDeviceFiles,
    /// Excludes regular files modified before this time (duplicity's time
    /// syntax, [`time::parse_time`]).
    ExcludeOlderThan(String),
}

/// Where a filelist is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filelist {
    Path(Vec<u8>),
    Stdin,
}

/// Makes an option from its value (empty for a switch).
type MakeOpt = fn(Vec<u8>) -> Opt;

/// The selection options: name, whether it takes a value, and what it means.
const OPTIONS: &[(&str, bool, MakeOpt)] = &[
    ("--include", true, |v| Opt::Include(text(v))),
    ("--exclude", true, |v| Opt::Exclude(text(v))),
    ("--include-regexp", true, |v| Opt::IncludeRegexp(text(v))),
    ("--exclude-regexp", true, |v| Opt::ExcludeRegexp(text(v))),
    ("--include-filelist", true, |v| Opt::IncludeFilelist(Filelist::Path(v))),
    ("--exclude-filelist", true, |v| Opt::ExcludeFilelist(Filelist::Path(v))),
    ("--include-filelist-stdin", false, |_| Opt::IncludeFilelist(Filelist::Stdin)),
    ("--exclude-filelist-stdin", false, |_| Opt::ExcludeFilelist(Filelist::Stdin)),
    ("--exclude-if-present", true, Opt::ExcludeIfPresent),
    ("--exclude-other-filesystems", false, |_| Opt::ExcludeOtherFilesystems),
    ("--exclude-device-files", false, |_| Opt::ExcludeDeviceFiles),
    ("--exclude-older-than", true, |v| Opt::ExcludeOlderThan(text(v))),
];

/// An option value as text (patterns and times are matched as text).
fn text(v: Vec<u8>) -> String {
    String::from_utf8_lossy(&v).into_owned()
}

/// The selection options among command-line arguments, in their order
/// (which decides what wins; an argument parser that groups values by
/// option loses it). Arguments before `--` that are not selection options
/// are taken to be switches.
pub fn options_from_args(args: impl IntoIterator<Item = OsString>) -> Result<Vec<Opt>> {
    let mut out = Vec::new();
    let mut args = args.into_iter().map(OsString::into_vec);
    while let Some(arg) = args.next() {
        if arg == b"--" {
            break;
        }
        let Some(&(name, takes_value, make)) = OPTIONS.iter().find(|(n, ..)| n.as_bytes() == arg) else {
            continue;
        };
        let value = match takes_value {
            true => args.next().ok_or_else(|| Error::usage(format!("{name} needs a value")))?,
            false => Vec::new(),
        };
        out.push(make(value));
    }
    Ok(out)
}

/// Duplicity's name for the source directory given as `src`: `.`
/// components, repeated and trailing slashes removed; `.` when nothing is
/// left.
pub fn canonical(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    if src.first() == Some(&b'/') {
        out.push(b'/');
    }
    for c in src.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".") {
        if !out.is_empty() && out.last() != Some(&b'/') {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// The source directory, as the selection sees it.
pub struct Root<'a> {
    /// Its [`canonical`] name.
    pub path: &'a [u8],
    pub ftype: FileType,
    /// Device it is on (`st_dev`).
    pub dev: u64,
}

/// A path to select.
pub struct Candidate<'a> {
    /// Full name as duplicity sees it (source name + `/` + path inside).
    pub path: &'a str,
    pub ftype: FileType,
    /// Device it is on (`st_dev`).
    pub dev: u64,
    /// Modification time in whole seconds (`st_mtime`).
    pub mtime: i64,
    /// For a directory, whether it has an entry of this name; `None` when
    /// unknown (its listing could not be read). Asked only when
    /// [`Selection::needs_listing`].
    pub contains: &'a dyn Fn(&[u8]) -> Option<bool>,
}

/// A compiled set of selection options.
#[derive(Debug, Default)]
pub struct Selection {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    test: Test,
    include: bool,
    /// How the user wrote it, for messages.
    name: String,
}

#[derive(Debug)]
enum Test {
    Glob(Glob),
    /// The glob `**`.
    Everything,
    Regexp(Regex),
    Present(Vec<u8>),
    DeviceFiles,
    OtherFilesystem(u64),
    OlderThan(i64),
}

impl Selection {
    /// Compiles `opts` for the source `root`. Filelists are read here (a
    /// `Filelist::Stdin` from standard input), split on NUL bytes with
    /// `null_separator`, else on line ends. Errors are usage errors: a bad
    /// glob, regexp or time, a glob that cannot match under the source, an
    /// unreadable filelist, or a last rule that only includes (it would
    /// change nothing, since the default is to include).
    pub fn new(root: &Root, opts: &[Opt], null_separator: bool) -> Result<Selection> {
        let mut sel = Selection::default();
        // Rules that duplicity puts before all others.
        let mut first = Vec::new();
        for opt in opts {
            match opt {
                Opt::Include(g) => sel.rules.push(Rule::glob(root, g, true)?),
                Opt::Exclude(g) => sel.rules.push(Rule::glob(root, g, false)?),
                Opt::IncludeRegexp(r) => sel.rules.push(Rule::regexp(r, true)?),
                Opt::ExcludeRegexp(r) => sel.rules.push(Rule::regexp(r, false)?),
                Opt::IncludeFilelist(f) => sel.add_filelist(root, f, true, null_separator)?,
                Opt::ExcludeFilelist(f) => sel.add_filelist(root, f, false, null_separator)?,
                Opt::ExcludeIfPresent(name) => first.push(Rule {
                    test: Test::Present(name.clone()),
                    include: false,
                    name: format!("--exclude-if-present {}", String::from_utf8_lossy(name)),
                }),
                Opt::ExcludeDeviceFiles => {
                    first.push(Rule { test: Test::DeviceFiles, include: false, name: "--exclude-device-files".into() })
                }
                Opt::ExcludeOtherFilesystems => sel.rules.push(Rule {
                    test: Test::OtherFilesystem(root.dev),
                    include: false,
                    name: "--exclude-other-filesystems".into(),
                }),
                Opt::ExcludeOlderThan(t) => sel.rules.push(Rule {
                    test: Test::OlderThan(
                        time::parse_time(t, time::now()).map_err(|e| e.context("--exclude-older-than"))?,
                    ),
                    include: false,
                    name: format!("--exclude-older-than {t}"),
                }),
            }
        }
        // Each of these goes to the front, so the last given ends up first.
        for rule in first {
            sel.rules.insert(0, rule);
        }
        if let Some(last) = sel.rules.last().filter(|r| r.include) {
            return Err(Error::usage(format!(
                "the last selection rule ({}) only includes files; everything is included by default, \
                 so it changes nothing",
                last.name
            ))
            .hint("end with an exclude, e.g. --exclude '**' to keep only what the includes select"));
        }
        Ok(sel)
    }

    /// True when there are no rules: everything is included.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// True when [`Candidate::contains`] may be asked (`--exclude-if-present`).
    pub fn needs_listing(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.test, Test::Present(_)))
    }

    /// The verdict on `c`: the first rule that includes or excludes it wins;
    /// if an earlier rule said scan and the winner does not include, it is
    /// scanned; if no rule speaks, it is included.
    pub fn select(&self, c: &Candidate) -> Verdict {
        let mut scan = false;
        for rule in &self.rules {
            match rule.eval(c) {
                Some(Verdict::Scan) => scan = true,
                Some(Verdict::Include) => return Verdict::Include,
                Some(Verdict::Exclude) => return if scan { Verdict::Scan } else { Verdict::Exclude },
                None => {}
            }
        }
        if scan { Verdict::Scan } else { Verdict::Include }
    }

    fn add_filelist(&mut self, root: &Root, list: &Filelist, include: bool, null_separator: bool) -> Result<()> {
        let (what, raw) = match list {
            Filelist::Stdin => {
                let mut v = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut v)
                    .map_err(|e| Error::usage(format!("reading a filelist from standard input: {e}")))?;
                ("standard input".to_string(), v)
            }
            Filelist::Path(p) => {
                let what = String::from_utf8_lossy(p).into_owned();
                let v = std::fs::read(std::ffi::OsStr::from_bytes(p))
                    .map_err(|e| Error::usage(format!("reading the filelist {what}: {e}")))?;
                (what, v)
            }
        };
        for (n, glob, inc) in filelist_lines(&String::from_utf8_lossy(&raw), include, null_separator) {
            let rule = Rule::glob(root, glob, inc).map_err(|e| e.context(format!("{what}, line {n}")))?;
            self.rules.push(rule);
        }
        Ok(())
    }
}

/// The globs of a filelist as (line number, glob, whether it includes):
/// blank lines and `#` comments skipped, `+ ` or `- ` overriding `include`,
/// one pair of enclosing quotes removed.
fn filelist_lines(text: &str, include: bool, null_separator: bool) -> impl Iterator<Item = (usize, &str, bool)> {
    let items: Box<dyn Iterator<Item = &str>> = if null_separator {
        Box::new(text.split('\0'))
    } else {
        // Python's universal newlines: \r\n, \r and \n all end a line.
        Box::new(text.split('\n').flat_map(|l| l.strip_suffix('\r').unwrap_or(l).split('\r')))
    };
    items.enumerate().filter_map(move |(n, line)| {
        // Python's str.strip(): Unicode white space and the separators \x1c-\x1f.
        let line = line.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c));
        if line.starts_with('#') {
            return None;
        }
        let (line, inc) = match (line.strip_prefix("+ "), line.strip_prefix("- ")) {
            (Some(rest), _) => (rest, true),
            (_, Some(rest)) => (rest, false),
            _ => (line, include),
        };
        // As in Python, a lone quote counts as both ends.
        let quoted = |q: char| line.starts_with(q) && line.ends_with(q);
        let line =
            if quoted('\'') || quoted('"') { line.get(1..line.len().saturating_sub(1)).unwrap_or("") } else { line };
        (!line.is_empty()).then_some((n + 1, line, inc))
    })
}

impl Rule {
    fn glob(root: &Root, pattern: &str, include: bool) -> Result<Rule> {
        let name = format!("{} {pattern}", if include { "--include" } else { "--exclude" });
        if pattern == "**" {
            return Ok(Rule { test: Test::Everything, include, name });
        }
        let glob = Glob::new(pattern).map_err(|e| Error::usage(format!("{name}: {e}")))?;
        // A glob must be able to match the source directory or something in it.
        let root_path = String::from_utf8_lossy(root.path);
        if glob.eval(&root_path, root.ftype == FileType::Dir, true).is_none() {
            return Err(Error::usage(format!("{name}: the pattern cannot match anything in the source {root_path}"))
                .hint(format!("patterns start with the source as given ({root_path}/...) or with '**'")));
        }
        Ok(Rule { test: Test::Glob(glob), include, name })
    }

    fn regexp(re: &str, include: bool) -> Result<Rule> {
        let opt = if include { "--include-regexp" } else { "--exclude-regexp" };
        let compiled = Regex::new(re).map_err(|e| {
            Error::usage(format!("{opt} {re}: {e}")).hint(
                "the syntax is that of Rust's regex crate: Python's look-around and back-references are not supported",
            )
        })?;
        Ok(Rule { test: Test::Regexp(compiled), include, name: format!("{opt} {re}") })
    }

    fn eval(&self, c: &Candidate) -> Option<Verdict> {
        let says = |hit: bool| hit.then_some(if self.include { Verdict::Include } else { Verdict::Exclude });
        match &self.test {
            Test::Glob(g) => g.eval(c.path, c.ftype == FileType::Dir, self.include),
            Test::Everything => says(true),
            Test::Regexp(re) => says(re.is_match(c.path)),
            Test::Present(name) => says(c.ftype == FileType::Dir && (c.contains)(name) == Some(true)),
            Test::DeviceFiles => says(matches!(c.ftype, FileType::Char | FileType::Block)),
            Test::OtherFilesystem(dev) => says(c.dev != *dev),
            Test::OlderThan(t) => says(c.ftype == FileType::File && c.mtime < *t),
        }
    }
}

/// Python's `$` (without MULTILINE): the end, or before a final newline.
const END: &str = r"\n?\z";

/// A compiled glob.
#[derive(Debug)]
struct Glob {
    /// The path or anything under it.
    within: Regex,
    /// For a glob ending in `/`: the exact path, which must be a directory.
    exact_dir: Option<Regex>,
    /// Directories on the way to a match (up to the first `**`).
    scan: Regex,
}

impl Glob {
    fn new(pattern: &str) -> std::result::Result<Glob, String> {
        // Lower-cased as duplicity does (which matters only to ranges: [A-_] is valid, [a-_] is not).
        let lowered;
        let (ignore_case, pattern) = match pattern.get(..11) {
            Some(p) if p.eq_ignore_ascii_case("ignorecase:") => {
                lowered = pattern[11..].to_lowercase();
                (true, lowered.as_str())
            }
            _ => (false, pattern),
        };
        let pattern = if pattern == "/" { "/**" } else { pattern };
        let (pattern, dir_only) = match pattern.strip_suffix('/') {
            Some(p) => (p, true),
            None if pattern.is_empty() => return Err("empty pattern".into()),
            None => (pattern, false),
        };
        let flags = if ignore_case { "(?si)" } else { "(?s)" };
        let body = glob_to_regex(pattern)?;
        let compile = |re: String| Regex::new(&re).map_err(|e| e.to_string());
        let within = compile(format!("{flags}^{body}(?:{END}|/)"))?;
        let exact_dir = if dir_only { Some(compile(format!("{flags}^{body}{END}"))?) } else { None };
        let upto = pattern.find("**").map_or(pattern, |i| &pattern[..i + 2]);
        let parts: Vec<&str> = upto.split('/').collect();
        if parts.len() > 2 && parts[1..parts.len() - 1].contains(&"") {
            return Err("consecutive '/'s in the pattern".into());
        }
        let mut prefixes = Vec::with_capacity(parts.len());
        for i in 0..parts.len() {
            let prefix = parts[..=i].join("/");
            prefixes.push(glob_to_regex(if prefix.is_empty() { "/" } else { &prefix })?);
        }
        let scan = compile(format!("{flags}^(?:{}){END}", prefixes.join("|")))?;
        Ok(Glob { within, exact_dir, scan })
    }

    fn eval(&self, path: &str, is_dir: bool, include: bool) -> Option<Verdict> {
        let verdict = if include { Verdict::Include } else { Verdict::Exclude };
        if self.within.is_match(path) {
            match &self.exact_dir {
                Some(exact) if exact.is_match(path) && !is_dir => None,
                _ => Some(verdict),
            }
        } else if include && self.scan.is_match(path) {
            Some(Verdict::Scan)
        } else {
            None
        }
    }
}

/// Translates a glob into a regular expression (unanchored).
fn glob_to_regex(pat: &str) -> std::result::Result<String, String> {
    let p: Vec<char> = pat.chars().collect();
    let n = p.len();
    let mut out = String::with_capacity(pat.len() * 2);
    let mut i = 0;
    while i < n {
        let c = p[i];
        i += 1;
        match c {
            '*' if p.get(i) == Some(&'*') => {
                out.push_str(".*");
                i += 1;
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '[' => {
                // Find the closing ']'; one right after '[', '[!' or '[^' is literal.
                let mut j = i;
                if j < n && (p[j] == '!' || p[j] == '^') {
                    j += 1;
                }
                if j < n && p[j] == ']' {
                    j += 1;
                }
                while j < n && p[j] != ']' {
                    j += 1;
                }
                if j >= n {
                    out.push_str(r"\[");
                } else {
                    out.push_str(&class_to_regex(&p[i..j])?);
                    i = j + 1;
                }
            }
            _ => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    Ok(out)
}

/// The inside of a glob's `[...]` as a regex class, read as Python's `re`
/// reads it: a leading `!` or `^` negates, `a-z` is a range, a `-` that
/// cannot form one and every other character (backslash included) is literal.
fn class_to_regex(body: &[char]) -> std::result::Result<String, String> {
    let mut out = String::from("[");
    let mut rest = body;
    if let Some((&first, tail)) = rest.split_first()
        && (first == '!' || first == '^')
    {
        out.push('^');
        rest = tail;
    }
    let lit = |c: char, out: &mut String| {
        if matches!(c, '\\' | '[' | ']' | '^' | '-' | '&' | '~') {
            out.push('\\');
        }
        out.push(c);
    };
    let mut k = 0;
    while k < rest.len() {
        let lo = rest[k];
        if rest.get(k + 1) == Some(&'-') && k + 2 < rest.len() {
            let hi = rest[k + 2];
            if hi < lo {
                return Err(format!("bad character range {lo}-{hi}"));
            }
            lit(lo, &mut out);
            out.push('-');
            lit(hi, &mut out);
            k += 3;
        } else {
            lit(lo, &mut out);
            k += 1;
        }
    }
    out.push(']');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(path: &str) -> Root<'_> {
        Root { path: path.as_bytes(), ftype: FileType::Dir, dev: 1 }
    }

    fn sel(opts: &[Opt]) -> Selection {
        Selection::new(&root("/src"), opts, false).expect("valid selection")
    }

    fn verdict(s: &Selection, path: &str, ftype: FileType) -> Verdict {
        let contains = |name: &[u8]| Some(name == b".nobackup" && path.ends_with("/marked"));
        s.select(&Candidate { path, ftype, dev: 1, mtime: 100, contains: &contains })
    }

    use FileType::{Dir, File};
    use Verdict::{Exclude, Include, Scan};

    #[test]
    fn canonical_names() {
        assert_eq!(canonical(b"/a//b/./"), b"/a/b");
        assert_eq!(canonical(b"./"), b".");
        assert_eq!(canonical(b"/"), b"/");
        assert_eq!(canonical(b"a/../b"), b"a/../b");
    }

    #[test]
    fn globs_match_like_duplicity() {
        // (glob, path, matches as an exclude) — checked against duplicity 0.8.22's globmatch.
        let cases = [
            ("/src/a", "/src/a", true),
            ("/src/a", "/src/a/b/c", true),
            ("/src/a", "/src/ab", false),
            ("/src/*", "/src/x/y", true),
            ("/src/*.txt", "/src/d/x.txt", false),
            ("/src/**.txt", "/src/d/x.txt", true),
            ("/src/?", "/src/x", true),
            ("/src/?", "/src/xy", false),
            ("/src/[ab]", "/src/b", true),
            ("/src/[!ab]", "/src/c", true),
            ("/src/[!ab]", "/src/a", false),
            ("/src/[a-c]x", "/src/bx", true),
            ("/src/[]]", "/src/]", true),
            ("/src/[x", "/src/[x", true),
            ("/src/a.b", "/src/a-b", false),
            ("/src/a\\b", "/src/a\\b", true),
            ("/src/[\\]", "/src/\\", true),
            ("**/x", "/src/d/x", true),
            ("/src/x", "/src/x\n", true),
            ("ignorecase:/SRC/X", "/src/x", true),
            ("/src/[a-c-e]", "/src/-", true),
            ("/src/a/", "/src/a/f", true),
        ];
        for (g, p, want) in cases {
            let s = sel(&[Opt::Exclude(g.into())]);
            let got = verdict(&s, p, File) == Exclude;
            assert_eq!(got, want, "glob {g:?} on {p:?}");
        }
    }

    #[test]
    fn trailing_slash_matches_directories_only() {
        let s = sel(&[Opt::Exclude("/src/a/".into())]);
        assert_eq!(verdict(&s, "/src/a", File), Include);
        assert_eq!(verdict(&s, "/src/a", Dir), Exclude);
    }

    #[test]
    fn include_scans_parents_and_first_match_wins() {
        let s = sel(&[Opt::Include("/src/a/b/c".into()), Opt::Exclude("**".into())]);
        assert_eq!(verdict(&s, "/src/a", Dir), Scan);
        assert_eq!(verdict(&s, "/src/a/b", Dir), Scan);
        assert_eq!(verdict(&s, "/src/a/b/c", File), Include);
        assert_eq!(verdict(&s, "/src/a/b/c/d", File), Include);
        assert_eq!(verdict(&s, "/src/a/x", File), Exclude);
        assert_eq!(verdict(&s, "/src/z", Dir), Exclude);
        // Scanning stops at the first "**".
        let s = sel(&[Opt::Include("/src/**/keep".into()), Opt::Exclude("**".into())]);
        assert_eq!(verdict(&s, "/src/any/deep/dir", Dir), Scan);
        // An exclude that wins first leaves nothing to scan.
        let s = sel(&[Opt::Exclude("/src/a".into()), Opt::Include("/src/a/b".into()), Opt::Exclude("**".into())]);
        assert_eq!(verdict(&s, "/src/a", Dir), Exclude);
    }

    #[test]
    fn other_rules() {
        let s = sel(&[Opt::ExcludeIfPresent(b".nobackup".to_vec())]);
        assert_eq!(verdict(&s, "/src/marked", Dir), Exclude);
        assert_eq!(verdict(&s, "/src/other", Dir), Include);
        let s = sel(&[Opt::ExcludeOlderThan("101".into())]);
        assert_eq!(verdict(&s, "/src/f", File), Exclude);
        assert_eq!(verdict(&s, "/src/d", Dir), Include);
        let s = sel(&[Opt::ExcludeRegexp("[0-9]$".into())]);
        assert_eq!(verdict(&s, "/src/f1", File), Exclude);
        assert_eq!(verdict(&s, "/src/f", File), Include);
    }

    #[test]
    fn bad_selections_are_usage_errors() {
        let bad = |opts: &[Opt]| Selection::new(&root("/src"), opts, false).unwrap_err();
        assert!(bad(&[Opt::Exclude("/other/x".into())]).message.contains("cannot match"));
        assert!(bad(&[Opt::Include("/src/x".into())]).message.contains("only includes"));
        assert!(bad(&[Opt::Exclude("/src//x".into())]).message.contains("consecutive"));
        assert!(bad(&[Opt::Exclude("/src/[b-a]".into())]).message.contains("range"));
        // Lower-cased first, as duplicity does: [a-_] is not a range.
        assert!(bad(&[Opt::Exclude("ignorecase:/src/[A-_]".into())]).message.contains("range"));
        assert!(bad(&[Opt::ExcludeRegexp("(".into())]).message.contains("regexp"));
        // exclude-if-present goes first, so the include is last.
        assert!(bad(&[Opt::Include("/src/x".into()), Opt::ExcludeIfPresent(b"m".to_vec())]).message.contains("only"));
    }

    #[test]
    fn filelists() {
        let text = "  /src/a  \n# comment\n\n- /src/b\r\n+ '/src/c'\r\"/src/d\"\n";
        let got: Vec<_> = filelist_lines(text, true, false).collect();
        assert_eq!(got, [(1, "/src/a", true), (4, "/src/b", false), (5, "/src/c", true), (6, "/src/d", true)]);
        let got: Vec<_> = filelist_lines("/src/a\0- /src/b c\0'\0\"\"", false, true).collect();
        assert_eq!(got, [(1, "/src/a", false), (2, "/src/b c", false)]);
    }

    #[test]
    fn options_keep_their_order() {
        let args = ["--json", "--exclude", "a", "--include-filelist-stdin", "--include", "--", "--", "--exclude", "x"];
        let opts = options_from_args(args.iter().map(OsString::from)).unwrap();
        assert_eq!(opts, [Opt::Exclude("a".into()), Opt::IncludeFilelist(Filelist::Stdin), Opt::Include("--".into())]);
    }
}
