//! Request bodies sent with `Content-Encoding` (RFC 9110 §8.4): gzip, deflate, br and zstd
//! are decoded here, before any handler sees the body. It owns the bound on the decoded
//! size and must not hold more than that bound of inflated bytes.

use super::error::ApiError;
use std::io::Read;

/// Decodes `body` by the codings of a `Content-Encoding` header, last applied first.
///
/// Errors: an unknown coding is `UnsupportedEncoding` (415); a decoded body over `limit`
/// bytes is `DecodedTooLarge` (413), found while decoding, so a decompression bomb never
/// inflates past `limit + 1` bytes; a corrupt body is `InvalidRequest` (400).
pub fn decode(header: Option<&str>, body: Vec<u8>, limit: usize) -> Result<Vec<u8>, ApiError> {
    let Some(header) = header else {
        return Ok(body);
    };
    let codings: Vec<String> = header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if let Some(unknown) = codings.iter().find(|c| coding(c).is_none()) {
        return Err(ApiError::UnsupportedEncoding(unknown.clone()));
    }
    let mut body = body;
    // The codings are listed in the order they were applied, so undo them from the end.
    for name in codings.iter().rev() {
        let Some(kind) = coding(name) else {
            return Err(ApiError::UnsupportedEncoding(name.clone()));
        };
        body = inflate(kind, &body, limit)?;
    }
    Ok(body)
}

#[derive(Clone, Copy)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

fn coding(name: &str) -> Option<Coding> {
    match name {
        "gzip" | "x-gzip" => Some(Coding::Gzip),
        "deflate" => Some(Coding::Deflate),
        "br" => Some(Coding::Brotli),
        "zstd" => Some(Coding::Zstd),
        _ => None,
    }
}

fn inflate(kind: Coding, encoded: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let reader: Box<dyn Read + '_> = match kind {
        Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(encoded)),
        // RFC 9110's "deflate" is the zlib format (RFC 1950), not a raw deflate stream.
        Coding::Deflate => Box::new(flate2::read::ZlibDecoder::new(encoded)),
        Coding::Brotli => Box::new(brotli::Decompressor::new(encoded, 8192)),
        Coding::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(encoded).map_err(|e| corrupt(kind, &e))?;
            // A frame may ask for a window of up to 128 MiB, allocated before a byte comes
            // out; no window needs to be larger than the body may be, beyond the 8 MiB
            // every decoder is asked to support (RFC 8878 §3.1.1.1.2).
            decoder
                .window_log_max(window_log(limit))
                .map_err(|e| corrupt(kind, &e))?;
            Box::new(decoder)
        }
    };
    let mut decoded = Vec::new();
    // One byte past the limit is enough to know the body is too large.
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|e| corrupt(kind, &e))?;
    if decoded.len() > limit {
        return Err(ApiError::DecodedTooLarge { limit });
    }
    Ok(decoded)
}

/// The base-2 logarithm of the smallest zstd window holding `limit` bytes, at least 8 MiB
/// (2^23) and at most zstd's own maximum (2^31).
fn window_log(limit: usize) -> u32 {
    (usize::BITS - limit.max(1).leading_zeros()).clamp(23, 31)
}

fn corrupt(kind: Coding, error: &std::io::Error) -> ApiError {
    let name = match kind {
        Coding::Gzip => "gzip",
        Coding::Deflate => "deflate",
        Coding::Brotli => "br",
        Coding::Zstd => "zstd",
    };
    ApiError::invalid(
        format!("the request body is not valid `{name}`: {error}"),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        writer.write_all(data).unwrap();
        drop(writer);
        out
    }

    #[test]
    fn every_coding_round_trips_and_stacked_codings_are_undone_in_reverse() {
        let data = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
        let zstd = zstd::encode_all(&data[..], 3).unwrap();
        for (header, body) in [
            ("gzip", gzip(&data)),
            ("x-gzip", gzip(&data)),
            ("deflate", deflate(&data)),
            ("br", brotli(&data)),
            ("zstd", zstd),
            ("identity", data.clone()),
            ("gzip, br", brotli(&gzip(&data))),
            ("GZIP", gzip(&data)),
        ] {
            assert_eq!(decode(Some(header), body, 1024).unwrap(), data, "{header}");
        }
        assert_eq!(decode(None, data.clone(), 1024).unwrap(), data);
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit_and_unknown_or_corrupt_bodies_are_client_errors() {
        let bomb = gzip(&vec![b'a'; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let err = decode(Some("gzip"), bomb, 1024 * 1024).unwrap_err();
        assert_eq!(err.status(), 413);
        // A zstd frame that asks for a window larger than the limit is refused, not allocated.
        let wide = zstd::bulk::Compressor::new(3)
            .and_then(|mut c| {
                c.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))?;
                c.set_parameter(zstd::stream::raw::CParameter::EnableLongDistanceMatching(
                    true,
                ))?;
                c.compress(&vec![b'z'; 1 << 20])
            })
            .unwrap();
        assert!(decode(Some("zstd"), wide, 4096).is_err());
        assert_eq!(window_log(16 * 1024 * 1024), 25);
        assert_eq!(window_log(1), 23);
        let err = decode(Some("compress"), b"x".to_vec(), 10).unwrap_err();
        assert_eq!(err.status(), 415);
        assert!(err.to_string().contains("`compress`"), "{err}");
        for header in ["gzip", "deflate", "br", "zstd"] {
            let err = decode(Some(header), b"not compressed at all".to_vec(), 1024).unwrap_err();
            assert_eq!(err.status(), 400, "{header}");
        }
    }
}
