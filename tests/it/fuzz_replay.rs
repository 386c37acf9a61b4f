//! The fuzz targets' bodies (`dup::fuzzing`, run by `scripts/fuzz`) over
//! their seeds (`fuzz/seeds/TARGET/`, from `scripts/fuzz-seeds`) and every
//! input that once made one fail (`fuzz/regressions/TARGET/`): a crash
//! found once stays fixed, without a fuzzer or a nightly toolchain.

use std::path::Path;
use std::time::{Duration, Instant};

use dup::fuzzing::{TARGETS, run};

/// Slower than this on one input is a failure (a hang found once).
const SLOW: Duration = Duration::from_secs(10);

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<_> = rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

fn replay(target: &str) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = inputs(&fuzz.join("seeds").join(target));
    assert!(!seeds.is_empty(), "no seeds for {target} in fuzz/seeds (scripts/fuzz-seeds writes them)");
    for path in seeds.iter().chain(&inputs(&fuzz.join("regressions").join(target))) {
        let data = std::fs::read(path).unwrap();
        let start = Instant::now();
        let done = std::panic::catch_unwind(|| run(target, &data));
        assert!(done.is_ok(), "{target} panicked on {}", path.display());
        assert!(done.unwrap(), "unknown target {target}");
        assert!(start.elapsed() < SLOW, "{target} took {:?} on {}", start.elapsed(), path.display());
    }
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<_> = inputs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets"))
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut want: Vec<_> = TARGETS.iter().map(|t| t.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "fuzz/fuzz_targets and dup::fuzzing::TARGETS differ");
}

macro_rules! replay_tests {
    ($($t:ident),*) => { $( #[test] fn $t() { replay(stringify!($t)); } )* };
}
replay_tests!(record, manifest, names, tar, sigtar, rsync_patch, time, openpgp);
