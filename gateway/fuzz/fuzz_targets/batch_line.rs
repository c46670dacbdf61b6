//! Fuzzes the batch line judge: the input is a file's lines, judged in order as the runner
//! judges them, for the endpoint its first byte picks. Every line gets a verdict, never a
//! panic; every refusal carries a code, a message and the line's number, and names its field
//! unless the line is not JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obb_gateway::runner::judge_line;
use obb_gateway::server::check_line_body;
use std::collections::HashSet;

/// The endpoints batches take; each line's body is judged as a direct request to one.
const ENDPOINTS: [&str; 3] = ["/v1/chat/completions", "/v1/embeddings", "/v1/completions"];

fuzz_target!(|data: &[u8]| {
    let endpoint = ENDPOINTS[data
        .first()
        .map_or(0, |b| usize::from(*b) % ENDPOINTS.len())];
    let mut seen = HashSet::new();
    for (index, text) in data.split(|b| *b == b'\n').enumerate() {
        let number = index as u64 + 1;
        match judge_line(&check_line_body, endpoint, number, text, &mut seen) {
            Ok(line) => {
                // An accepted line is a request the direct check accepts, with its model.
                assert_eq!(line.line, number);
                assert!(!line.custom_id.is_empty());
                assert_eq!(
                    check_line_body(endpoint, line.payload.as_bytes()),
                    Ok(line.model)
                );
                // Its `custom_id` is taken now.
                let again = judge_line(&check_line_body, endpoint, number, text, &mut seen)
                    .expect_err("a second line with the same `custom_id`");
                assert_eq!(again.code.as_deref(), Some("duplicate_custom_id"));
            }
            Err(error) => {
                let code = error.code.as_deref().unwrap_or_default();
                let message = error.message.as_deref().unwrap_or_default();
                assert!(!code.is_empty() && !message.is_empty(), "{error:?}");
                assert_eq!(error.line, Some(number));
                let named = error.param.as_deref().is_some_and(|p| !p.is_empty());
                match code {
                    "invalid_json_line" => assert!(error.param.is_none(), "{error:?}"),
                    // A direct request's refusal names a field where it can.
                    "invalid_request" => {}
                    _ => assert!(named, "{error:?}"),
                }
            }
        }
    }
});
