#![no_main]
// Body: dup::fuzzing::openpgp (also run over the seeds and regressions by tests/it/fuzz_replay.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| dup::fuzzing::openpgp(data));
