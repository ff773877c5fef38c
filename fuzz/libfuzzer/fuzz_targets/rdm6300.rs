#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rollcall_fuzz::drivers::rdm6300(data));
