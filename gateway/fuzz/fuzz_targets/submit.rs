//! Fuzzes the submit validator: any body must get a verdict, never a panic, and every
//! rejection must be a client error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = obb_gateway::http::parse_submit(data) {
        assert!((400..500).contains(&error.status()), "{error}");
    }
});
