//! Checks against the installed duplicity 0.8: archives it writes are read
//! and rewritten byte for byte, and its file-name parser agrees with ours.
//! Each test is skipped (with a note) when duplicity is not installed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha1::{Digest, Sha1};

use super::collection::{Collection, SetKind};
use super::manifest::Manifest;
use super::names::{FileKind, NameOptions, Naming, Suffix, to_base36};
use super::tar::{self, EntryType};

/// The interpreter that runs duplicity (from its `#!` line), if installed.
fn duplicity_python() -> Option<PathBuf> {
    let out = Command::new("sh").args(["-c", "command -v duplicity"]).output().ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
    if path.is_empty() {
        return None;
    }
    let text = std::fs::read(&path).ok()?;
    let first = text.split(|&b| b == b'\n').next()?;
    let interp = std::str::from_utf8(first.strip_prefix(b"#!")?).ok()?.split_whitespace().next()?;
    Some(PathBuf::from(interp))
}

fn have_duplicity(test: &str) -> bool {
    let ok = Command::new("duplicity").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        eprintln!("duplicity not on PATH: skipping {test}");
    }
    ok
}

fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, data).unwrap();
}

fn os(b: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(b)
}

fn cstr(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).unwrap()
}

fn pseudo_random(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn run_duplicity(args: &[&str], src: &Path, url: &str, cache: &Path) {
    let out = Command::new("duplicity")
        .args(args)
        .args(["--no-encryption", "--volsize", "1", "--archive-dir"])
        .arg(cache)
        .args(["--name", "fixture"])
        .arg(src)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "duplicity {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

/// Reads every entry of a tar and rewrites it with our writer, checking the
/// entry-name conventions; returns the writer (not yet ended) and the items.
fn rewrite(tar_bytes: &[u8], sigtar: bool) -> (tar::Writer<Vec<u8>>, Vec<tar::Item>) {
    let mut w = tar::Writer::new(Vec::new());
    let mut items = Vec::new();
    tar::for_each_entry(tar_bytes, |item, data| {
        let name = tar::parse_entry_name(&item.name)?;
        let is_dir = item.meta.typeflag == tar::DIR;
        let again = if sigtar {
            tar::sigtar_entry_name(name.kind, &name.index, is_dir)
        } else {
            tar::volume_entry_name(name.kind, &name.index, is_dir, name.chunk)
        };
        assert_eq!(again, item.name, "entry name convention");
        item.meta.to_entry(&name.index, item.size)?;
        w.begin(&item.name, &item.meta, item.size)?;
        std::io::copy(data, &mut w).unwrap();
        w.end_entry()?;
        items.push(item);
        Ok(())
    })
    .unwrap();
    (w, items)
}

#[test]
fn duplicity_archive_round_trip() {
    if !have_duplicity("duplicity_archive_round_trip") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, target, cache) = (tmp.path().join("src"), tmp.path().join("target"), tmp.path().join("cache"));
    write(&src.join("a.txt"), b"hello world\n");
    write(&src.join("big.bin"), &pseudo_random(1_500_000, 7));
    write(&src.join("exact64k.bin"), &pseudo_random(65_536, 9));
    write(&src.join(os(b"caf\xe9.txt")), b"latin-1\n");
    write(&src.join("ünïcödé.txt"), b"utf-8\n");
    write(&src.join("dir1/file with space.txt"), b"space\n");
    write(&src.join("dir1/nested/deep.txt"), b"deep\n");
    write(&src.join(format!("{}/{}.txt", "d".repeat(60), "f".repeat(70))), b"long\n");
    write(&src.join("foreign"), b"foreign\n");
    std::fs::create_dir(src.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink(format!("/{}", "t".repeat(150)), src.join("longlink")).unwrap();
    // Best effort: these need privileges or may be refused in a container.
    let (fifo, dev, chown) = unsafe {
        (
            libc::mkfifo(cstr(&src.join("fifo")).as_ptr(), 0o644) == 0,
            libc::mknod(cstr(&src.join("chardev")).as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) == 0,
            libc::lchown(cstr(&src.join("foreign")).as_ptr(), 3_000_000, 3_000_001) == 0,
        )
    };
    eprintln!("fixture has a fifo: {fifo}, a char device: {dev}, a file of uid 3000000: {chown}");
    let url = format!("file://{}", target.display());
    run_duplicity(&["full"], &src, &url, &cache);
    std::fs::OpenOptions::new().append(true).open(src.join("a.txt")).unwrap().write_all(b"more\n").unwrap();
    std::fs::remove_dir_all(src.join("dir1/nested")).unwrap();
    write(&src.join("new.txt"), b"new\n");
    run_duplicity(&["incremental"], &src, &url, &cache);

    let cache = cache.join("fixture");
    let (remote, local) = (listing(&target), listing(&cache));
    let naming = Naming::default();

    // Names: all recognised, and formatted back identically.
    for name in remote.iter().chain(&local) {
        let f = naming.parse(name).unwrap_or_else(|| panic!("{name} not recognised"));
        assert_eq!(naming.format(&f), *name);
        assert_eq!(f.suffix, if f.is_manifest() { Suffix::None } else { Suffix::Gzip }, "{name}");
    }

    // Sets and chains.
    let c = Collection::build(&remote, &local, &naming).unwrap();
    assert_eq!(c.chains.len(), 1);
    assert_eq!(c.primary, Some(0));
    assert!(c.primary_sig_chain().unwrap().local);
    assert!(c.orphaned_sets.is_empty() && c.incomplete_sets.is_empty() && c.warnings.is_empty());
    assert!(c.local_orphaned_sigs.is_empty() && c.remote_orphaned_sigs.is_empty());
    let chain = &c.chains[0];
    assert_eq!(chain.incs.len(), 1);
    assert!(chain.full.volumes.len() >= 2, "volsize 1 with 1.5 MB of random data");
    assert_eq!(chain.full.kind, SetKind::Full);
    assert!(chain.incs[0].start_time == chain.full.end_time && chain.incs[0].end_time > chain.full.end_time);
    assert_eq!(c.sig_chain_at(chain.end_time()).unwrap().0.incs.len(), 1);

    for set in chain.sets() {
        // Manifests: parse, write back byte for byte, same in the cache.
        let manifest_name = set.manifest.as_ref().unwrap();
        let text = std::fs::read(target.join(manifest_name)).unwrap();
        assert_eq!(std::fs::read(cache.join(set.local_manifest.as_ref().unwrap())).unwrap(), text);
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.to_bytes(), text, "{manifest_name}");
        assert_eq!(m.localdir.as_deref(), Some(std::os::unix::ffi::OsStrExt::as_bytes(src.as_os_str())));
        assert_eq!(m.volumes.keys().copied().collect::<Vec<_>>(), set.volumes.keys().copied().collect::<Vec<_>>());
        let files = m.files.as_ref().unwrap();
        if set.kind == SetKind::Full {
            assert!(files.iter().any(|f| f.path == b"dir1/file with space.txt"));
            assert!(files.iter().any(|f| f.path == b"caf\xe9.txt"));
        } else {
            assert!(files.iter().any(|f| f.path == b"dir1/nested/deep.txt"));
        }

        for (n, vol_name) in &set.volumes {
            let info = &m.volumes[n];
            let stored = std::fs::read(target.join(vol_name)).unwrap();
            let sha1: String = super::hex(&Sha1::digest(&stored));
            assert_eq!(info.best_hash(), Some(("SHA1", sha1.as_str())), "{vol_name}");

            // Volumes: our writer reproduces the decompressed tar exactly.
            let plain = gunzip(&target.join(vol_name));
            let (again, items) = rewrite(&plain, false);
            assert_eq!(again.into_inner().unwrap(), plain, "{vol_name} rewritten");
            // StartingPath/EndingPath are the first and last entries, with the
            // chunk number unless it is the file's last chunk.
            let pos = |item: &tar::Item| {
                let e = tar::parse_entry_name(&item.name).unwrap();
                let block = e.chunk.filter(|_| item.size == 65_536);
                (e.index, block)
            };
            if let (Some(first), Some(last)) = (items.first(), items.last()) {
                assert_eq!(pos(first), (info.start.clone(), info.start_block), "{vol_name} start");
                assert_eq!(pos(last), (info.end.clone(), info.end_block), "{vol_name} end");
            }
        }
        if set.kind == SetKind::Full {
            assert_eq!(m.volumes_for(b"a.txt"), vec![1]);
            assert!(m.volumes_for(b"big.bin").len() >= 2);
            assert_eq!(m.volumes_for(b"."), set.volumes.keys().copied().collect::<Vec<_>>());
        }
    }

    // Signature tars: rewritten byte for byte, end marker included.
    for name in remote.iter().filter(|n| naming.parse(n).is_some_and(|f| f.is_signature())) {
        let plain = gunzip(&target.join(name));
        assert_eq!(gunzip(&cache.join(name)), plain);
        let (again, items) = rewrite(&plain, true);
        assert_eq!(again.finish().unwrap(), plain, "{name} rewritten");
        let kinds: Vec<EntryType> = items.iter().map(|i| tar::parse_entry_name(&i.name).unwrap().kind).collect();
        assert!(kinds.iter().all(|k| matches!(k, EntryType::Signature | EntryType::Snapshot | EntryType::Deleted)));
        if naming.parse(name).unwrap().kind == FileKind::FullSig {
            assert_eq!(items[0].name, b"snapshot/");
            assert!(items.iter().any(|i| i.meta.linkname.len() == 151), "long symlink target");
            assert!(items.iter().any(|i| i.name.len() > 100), "long name");
            assert!(items.iter().any(|i| i.name == b"signature/caf\xe9.txt"), "non-UTF-8 name");
            let has = |f: &dyn Fn(&tar::Item) -> bool| items.iter().any(f);
            assert_eq!(has(&|i| i.meta.typeflag == tar::FIFO), fifo);
            assert_eq!(has(&|i| i.meta.typeflag == tar::CHAR && (i.meta.devmajor, i.meta.devminor) == (1, 3)), dev);
            assert_eq!(has(&|i| (i.meta.uid, i.meta.gid) == (3_000_000, 3_000_001)), chown);
        } else {
            assert!(kinds.contains(&EntryType::Deleted));
        }
    }
}

/// Our name parser against duplicity's own `file_naming.parse`, on valid,
/// odd and mutated names, under default, short and prefixed options.
#[test]
fn names_agree_with_duplicity() {
    if !have_duplicity("names_agree_with_duplicity") {
        return;
    }
    let Some(python) = duplicity_python() else {
        eprintln!("duplicity's interpreter not found: skipping names_agree_with_duplicity");
        return;
    };
    const SCRIPT: &str = r#"
import gettext, json, sys
gettext.install("duplicity")
from duplicity import config, dup_time, file_naming
dup_time.setcurtime(1700000000)
opts, names = json.load(sys.stdin)
config.file_prefix, config.file_prefix_archive, config.file_prefix_manifest, config.file_prefix_signature = (o.encode() for o in opts[:4])
config.short_filenames = opts[4]
file_naming.prepare_regex(force=True)
out = []
for n in names:
    try:
        pr = file_naming.parse(n.encode())
    except Exception:
        out.append("crash")
        continue
    out.append(pr and [pr.type, pr.time, pr.start_time, pr.end_time, pr.volume_number, bool(pr.manifest), bool(pr.partial), bool(pr.compressed), bool(pr.encrypted)])
print(json.dumps(out))
"#;
    let t1 = 1_795_665_570i64;
    let t2 = t1 + 49;
    let times = [
        super::time::to_compact(t1),
        "2002-04-26T04:22:01-07:00".to_string(),
        "2002-04-26T04:22:01Z".to_string(),
        "1700000000".to_string(),
        "20261126t035930z".to_string(),
        "garbage".to_string(),
        String::new(),
        "0".to_string(),
        "2002-04-26".to_string(),
    ];
    let mut names: Vec<String> = Vec::new();
    for sfx in ["", ".gz", ".gpg", ".z", ".g", ".xgz", ".part", ".part.gz", ".p", ".p.z"] {
        for t in &times {
            let t2s = super::time::to_compact(t2);
            names.push(format!("duplicity-full.{t}.vol1.difftar{sfx}"));
            names.push(format!("duplicity-full.{t}.vol0.difftar{sfx}"));
            names.push(format!("duplicity-full.{t}.manifest{sfx}"));
            names.push(format!("duplicity-inc.{t}.to.{t2s}.vol12.difftar{sfx}"));
            names.push(format!("duplicity-inc.{t2s}.to.{t}.manifest{sfx}"));
            names.push(format!("duplicity-full-signatures.{t}.sigtar{sfx}"));
            names.push(format!("duplicity-new-signatures.{t}.to.{t2s}.sigtar{sfx}"));
        }
        for t in [to_base36(t1 as u64), "0".into(), "A1".into(), String::new()] {
            let t2s = to_base36(t2 as u64);
            names.push(format!("df.{t}.1.dt{sfx}"));
            names.push(format!("df.{t}.z.dt{sfx}"));
            names.push(format!("df.{t}.m{sfx}"));
            names.push(format!("di.{t}.{t2s}.1.dt{sfx}"));
            names.push(format!("di.{t}.{t2s}.m{sfx}"));
            names.push(format!("dfs.{t}.st{sfx}"));
            names.push(format!("dns.{t}.{t2s}.st{sfx}"));
        }
    }
    names.extend(["unrelated.txt", "lockfile", "duplicity-full.x.y.vol1.difftar", "df.1.2.3.dt"].map(String::from));
    // Mutations of the valid names: a character deleted or inserted, outside
    // the compact times (duplicity reads a damaged 15-character time as
    // compact once it has appended "Z" for a UTC local zone; we don't).
    let base: Vec<String> = names.iter().take(80).cloned().collect();
    let compact = [t1, t2].map(super::time::to_compact);
    let compact = [compact.clone(), compact.map(|t| t.to_lowercase())].concat();
    let mut seed = 12_345u64;
    for n in &base {
        let in_time =
            |i: usize| compact.iter().any(|t| n.match_indices(t.as_str()).any(|(s, _)| (s..s + 16).contains(&i)));
        for _ in 0..6 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let i = (seed >> 33) as usize % (n.len() + 1);
            if in_time(i) {
                continue;
            }
            let c = ['.', 'a', 'Z', '9', 'T', 'z', 'g'][(seed >> 20) as usize % 7];
            let mut m = n.clone();
            if seed & 1 == 0 && i < n.len() {
                m.remove(i);
            } else {
                m.insert(i, c);
            }
            names.push(m);
        }
    }
    let prefixed: Vec<String> =
        names.iter().flat_map(|n| ["P_A_", "P_M_", "P_S_", "P_", "A_"].map(|p| format!("{p}{n}"))).step_by(3).collect();

    let option_sets = [
        (NameOptions::default(), &names),
        (NameOptions { short: true, ..Default::default() }, &names),
        (
            NameOptions {
                prefix: "P_".into(),
                prefix_archive: "A_".into(),
                prefix_manifest: "M_".into(),
                prefix_signature: "S_".into(),
                short: false,
            },
            &prefixed,
        ),
    ];
    for (opts, names) in option_sets {
        let input = serde_json::json!([
            [opts.prefix, opts.prefix_archive, opts.prefix_manifest, opts.prefix_signature, opts.short],
            names
        ]);
        let mut child =
            Command::new(&python).args(["-c", SCRIPT]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "duplicity's parser failed to run");
        let theirs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let naming = Naming::new(opts.clone());
        let mut compared = BTreeMap::new();
        for (name, want) in names.iter().zip(theirs) {
            if want == "crash" {
                *compared.entry("crash").or_insert(0) += 1;
                continue;
            }
            let ours = naming.parse(name).map(|f| {
                let full = f.kind.is_full();
                serde_json::json!([
                    f.kind.type_name(),
                    full.then_some(f.end),
                    (!full).then_some(f.start),
                    (!full).then_some(f.end),
                    f.volume(),
                    f.is_manifest(),
                    f.partial,
                    f.compressed(),
                    f.encrypted()
                ])
            });
            let ours = ours.unwrap_or(serde_json::Value::Null);
            assert_eq!(ours, want, "{name:?} under {opts:?}");
            *compared.entry(if want.is_null() { "ignored" } else { "recognised" }).or_insert(0) += 1;
        }
        eprintln!("names compared with duplicity under {opts:?}: {compared:?}");
        assert!(compared.get("recognised").copied().unwrap_or(0) > 50, "{compared:?}");
    }
}
