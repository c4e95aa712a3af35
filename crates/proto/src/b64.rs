//! Base64 as it appears inside XML: any XML whitespace (spaces, `\n`, `\r\n`, `&#xD;`) may be
//! interleaved, so strip it before decoding.
use base64::Engine;

pub fn decode(text: &str, field: &'static str) -> Result<Vec<u8>, crate::ProtoError> {
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean.as_bytes()).map_err(|_| crate::ProtoError::Base64(field))
}

pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
