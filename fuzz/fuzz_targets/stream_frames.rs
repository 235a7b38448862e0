#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| integration::fuzz::stream_frames(data));
