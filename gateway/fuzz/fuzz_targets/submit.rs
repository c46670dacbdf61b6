//! Fuzzes the submit validators: any body sent to any endpoint that queues jobs must get a
//! verdict, never a panic, and every rejection must be a client error. The first byte
//! picks the endpoint; the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openbeepboop::Endpoint;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let endpoint = Endpoint::QUEUED[usize::from(pick) % Endpoint::QUEUED.len()];
    if let Err(error) = obb_gateway::http::parse_for(endpoint, body) {
        assert!((400..500).contains(&error.status()), "{error}");
    }
});
