#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| autoenroll_fuzz_harness::certificate(data));
