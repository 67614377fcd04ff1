//! Fuzz target: the socket protocol (`macha_api`): a request line exactly as the daemon's server
//! reads it (UTF-8, trimmed, `parse_request`), and an answer line as the client decodes it
//! (`decode_line`). An accepted request must encode and parse back to itself, and a refusal must
//! make an answer line the client can read.

use macha_api::{Incoming, Response, decode_line, encode_request, parse_request};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(line) = std::str::from_utf8(data) {
            match parse_request(line.trim()) {
                Ok(req) => {
                    let _ = (req.is_write(), req.is_streamed(), req.op());
                    let encoded = match encode_request(&req) {
                        Ok(e) => e,
                        Err(e) => panic!("an accepted request does not encode: {e}"),
                    };
                    match parse_request(&encoded) {
                        Ok(back) => assert_eq!(back, req, "the request changed in its round trip: {encoded}"),
                        Err(r) => panic!("an encoded request is refused: {}: {encoded}", r.message),
                    }
                }
                Err(refusal) => {
                    let answer = Response::err(refusal.code, refusal.message.clone()).to_line();
                    match decode_line(&answer) {
                        Ok(Incoming::Err { code, .. }) => assert_eq!(code, refusal.code),
                        other => panic!("a refusal reads back as {other:?}: {answer}"),
                    }
                }
            }
        }
        let _ = decode_line(&macha_fuzz::text(data));
    });
}
