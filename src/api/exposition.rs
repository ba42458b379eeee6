//! ebb's `/metrics` body: the OpenMetrics text, gzip-compressed as it is encoded when the
//! scraper takes gzip (Prometheus always asks for it).
//!
//! At 5,000 targets the text is about 5.1 MB. Built as one String it is a transient of that
//! size on every scrape, and the allocator keeps the pages of a freed transient for the next
//! one: with Prometheus scraping every 15 to 30 s that is resident for good. Compressed while
//! it is written, what is held is the compressed body (at 5,000 targets 248 KB for 5.1 MB of
//! text) and the compressor's window.

use std::fmt;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use flate2::Compression;
use flate2::write::GzEncoder;

/// Writes the exposition of ebb's metrics into a sink.
pub type Encode = Arc<dyn Fn(&mut dyn fmt::Write) -> fmt::Result + Send + Sync>;

/// A `/metrics` body and whether it is gzip.
#[derive(Debug)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub gzip: bool,
}

/// Encodes an exposition per scrape, each body sized from the last one of its kind (a body
/// grown by doubling copies itself a dozen times at this size and holds up to twice over).
pub struct Exposition {
    encode: Encode,
    last_text: AtomicUsize,
    last_gzip: AtomicUsize,
}

impl Exposition {
    pub fn new(encode: Encode) -> Self {
        Self {
            encode,
            last_text: AtomicUsize::new(0),
            last_gzip: AtomicUsize::new(0),
        }
    }

    /// The body for a scrape whose `Accept-Encoding` is `accept_encoding`.
    pub fn body(&self, accept_encoding: Option<&str>) -> Result<Body, fmt::Error> {
        if accept_encoding.is_some_and(takes_gzip) {
            self.gzip().map(|bytes| Body { bytes, gzip: true })
        } else {
            self.text().map(|text| Body {
                bytes: text.into_bytes(),
                gzip: false,
            })
        }
    }

    /// The plain text.
    pub fn text(&self) -> Result<String, fmt::Error> {
        let last = self.last_text.load(Relaxed);
        let mut out = String::with_capacity(last + last / 16);
        (self.encode)(&mut out)?;
        self.last_text.store(out.len(), Relaxed);
        Ok(out)
    }

    /// The text compressed as it is written. The fastest level: the text repeats its metric
    /// and label names on every line, so it still shrinks about twentyfold, and the scrape
    /// took no longer than the plain text's (48 ms against 52 at 5,000 targets).
    fn gzip(&self) -> Result<Vec<u8>, fmt::Error> {
        let last = self.last_gzip.load(Relaxed);
        let out = Vec::with_capacity(last + last / 8);
        let mut sink = GzipSink {
            encoder: GzEncoder::new(out, Compression::fast()),
        };
        (self.encode)(&mut sink)?;
        let bytes = sink.encoder.finish().map_err(|_| fmt::Error)?;
        self.last_gzip.store(bytes.len(), Relaxed);
        Ok(bytes)
    }
}

struct GzipSink {
    encoder: GzEncoder<Vec<u8>>,
}

impl fmt::Write for GzipSink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Writing into memory fails only when the allocator does.
        self.encoder.write_all(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Whether an `Accept-Encoding` value takes gzip: a `gzip` (or `x-gzip`) coding without
/// `q=0`, or else a `*` without it (RFC 9110, 12.5.3: a coding named outranks the wildcard).
pub fn takes_gzip(accept_encoding: &str) -> bool {
    let mut wildcard = None;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let accepted = !parts.any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("q")
                    && v.trim().parse::<f64>().is_ok_and(|q| q == 0.0)
            })
        });
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            return accepted;
        }
        if coding == "*" {
            wildcard = Some(accepted);
        }
    }
    wildcard.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn exposition() -> Exposition {
        Exposition::new(Arc::new(|out: &mut dyn fmt::Write| {
            for i in 0..2_000 {
                writeln!(
                    out,
                    "ebb_target_replicas{{namespace=\"shop\",scaledtarget=\"t{i}\"}} {i}"
                )?;
            }
            writeln!(out, "# EOF")
        }))
    }

    #[test]
    fn the_gzip_body_is_the_text_compressed() {
        let e = exposition();
        let text = e.body(None).unwrap();
        assert!(!text.gzip);
        let gzip = e.body(Some("gzip")).unwrap();
        assert!(gzip.gzip);
        assert!(
            gzip.bytes.len() * 5 < text.bytes.len(),
            "{}",
            gzip.bytes.len()
        );
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&gzip.bytes[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text.bytes);
        // The next body of each kind is sized from the last.
        assert_eq!(e.last_text.load(Relaxed), text.bytes.len());
        assert_eq!(e.last_gzip.load(Relaxed), gzip.bytes.len());
    }

    #[test]
    fn gzip_is_taken_only_when_offered_without_q_zero() {
        // Prometheus's own header, and others seen in the field.
        assert!(takes_gzip("gzip"));
        assert!(takes_gzip("gzip, deflate, br"));
        assert!(takes_gzip("deflate, GZip;q=0.5"));
        assert!(takes_gzip("*"));
        assert!(takes_gzip("x-gzip"));
        assert!(!takes_gzip(""));
        assert!(!takes_gzip("identity"));
        assert!(!takes_gzip("br, deflate"));
        assert!(!takes_gzip("gzip;q=0"));
        assert!(!takes_gzip("gzip; q=0.0, identity"));
        assert!(!takes_gzip("gzipped"));
        assert!(!takes_gzip("gzip;q=0, *"));
        assert!(!takes_gzip("*;q=0"));
    }

    #[test]
    fn a_failing_encoder_is_a_failed_scrape_not_an_empty_one() {
        let e = Exposition::new(Arc::new(|_: &mut dyn fmt::Write| Err(fmt::Error)));
        assert!(e.body(Some("gzip")).is_err());
        assert!(e.body(None).is_err());
    }
}
