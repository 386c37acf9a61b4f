#![no_main]
// Body: dup::fuzzing::time (also run over the seeds and regressions by tests/it/fuzz_replay.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| dup::fuzzing::time(data));
