//! Helpers shared by the fuzz targets: splitting one input into several texts, and the fixed
//! values (hosts, times) the parsers need besides their input.

use std::borrow::Cow;

/// The byte that separates the parts of an input that feeds several parsers at once. A form feed
/// never occurs in the real outputs the seeds are taken from, so a seed file reads as the real
/// outputs joined by it.
pub const SEPARATOR: u8 = 0x0c;

/// `data` as text: invalid UTF-8 is replaced, so that every input reaches the parser (the real
/// callers read remote output with `String::from_utf8_lossy` too).
pub fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// The first `n` parts of `data` split at [`SEPARATOR`]; missing parts are `None` (what was not
/// run), and the last part takes the rest.
pub fn parts(data: &[u8], n: usize) -> Vec<Option<&[u8]>> {
    let mut out: Vec<Option<&[u8]>> = data.splitn(n, |b| *b == SEPARATOR).map(Some).collect();
    out.resize(n, None);
    out
}

/// The first byte of `data` (a selector or a small parameter) and the rest.
pub fn selector(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(s, rest)| (*s, rest))
}
