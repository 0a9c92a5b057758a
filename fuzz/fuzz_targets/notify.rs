#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    luod::fuzzing::notify(data);
});
