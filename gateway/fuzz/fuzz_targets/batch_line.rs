//! Fuzzes the batch line judge: the input is a file, cut into lines, stripped of their line
//! breaks and numbered as the runner reads them (blank lines skipped but counted), and judged
//! in order, for the endpoint its first byte picks. Every line gets a verdict, never a panic;
//! every refusal carries a code, a message and the line's number, and names its field unless
//! the line is not JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obb_gateway::runner::{is_blank, judge_line, strip_line_break};
use obb_gateway::server::check_line_body;
use std::collections::HashSet;

/// The endpoints batches take; each line's body is judged as a direct request to one.
const ENDPOINTS: [&str; 3] = ["/v1/chat/completions", "/v1/embeddings", "/v1/completions"];

fuzz_target!(|data: &[u8]| {
    let endpoint = ENDPOINTS[data
        .first()
        .map_or(0, |b| usize::from(*b) % ENDPOINTS.len())];
    let mut seen = HashSet::new();
    // `split_inclusive` keeps each `\n`, as the runner's `read_until` does.
    for (index, raw) in data.split_inclusive(|b| *b == b'\n').enumerate() {
        let number = index as u64 + 1;
        let text = strip_line_break(raw);
        assert!(!text.ends_with(b"\n") && !text.ends_with(b"\r"));
        if is_blank(text) {
            continue;
        }
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
                    // A direct request's refusal: its message is the direct check's own,
                    // word for word, for the endpoint the line was judged for.
                    "invalid_request" => {
                        let line: serde_json::Value = serde_json::from_slice(text).unwrap();
                        let body = serde_json::to_vec(&line["body"]).unwrap();
                        let (direct, _) = check_line_body(endpoint, &body).unwrap_err();
                        assert_eq!(message, direct);
                    }
                    _ => assert!(named, "{error:?}"),
                }
            }
        }
    }
});
