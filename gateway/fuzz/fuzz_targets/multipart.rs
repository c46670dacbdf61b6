//! Fuzzes the upload's form: the bytes are an upload's `Content-Type` and body, read in
//! pieces by the code `POST /v1/files` runs, the file counted rather than stored. Every
//! body gets a verdict, never a panic: the file's size, at most the limit, or an
//! OpenAI-shaped client error.
//!
//! Input: one byte for the size of the pieces (0: the body in one), the `Content-Type` up
//! to the first newline (empty: `multipart/form-data; boundary=B`), then the body.
#![no_main]

use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use obb_gateway::http::parse_upload;

/// Small, so the fuzzer reaches the limit.
const MAX_FILE: u64 = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let (head, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&rest[..0], rest),
    };
    let content_type = match head {
        [] => Some("multipart/form-data; boundary=B"),
        head => std::str::from_utf8(head).ok(),
    };
    let size = if piece == 0 {
        body.len().max(1)
    } else {
        usize::from(piece % 64) + 1
    };
    let chunks = body
        .chunks(size)
        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
        .collect::<Vec<_>>();
    match block_on(parse_upload(
        content_type,
        futures::stream::iter(chunks),
        MAX_FILE,
    )) {
        Ok(bytes) => assert!(bytes <= MAX_FILE, "{bytes} bytes"),
        Err(error) => {
            assert!((400..500).contains(&error.status()), "{error}");
            let envelope = error.envelope().error;
            assert!(
                !envelope.message.is_empty() && !envelope.kind.is_empty(),
                "{error}"
            );
        }
    }
});
