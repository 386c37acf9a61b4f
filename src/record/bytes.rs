//! Byte strings in records: CBOR byte strings between programs; in JSON,
//! content as base64 and paths as plain strings when UTF-8, else as
//! `{"escaped": "..."}` with `\\` for a backslash and `\xNN` for a byte that
//! is not UTF-8.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Raw content bytes (base64 in JSON).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

/// A path or name as raw bytes (a string in JSON when it is UTF-8).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathBytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl fmt::Debug for PathBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for PathBytes {
    /// Shows the path as text, with bytes that are not UTF-8 and control
    /// characters as `\xNN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&self.0, false))
    }
}

impl From<&[u8]> for PathBytes {
    fn from(v: &[u8]) -> Self {
        PathBytes(v.to_vec())
    }
}

impl From<Vec<u8>> for PathBytes {
    fn from(v: Vec<u8>) -> Self {
        PathBytes(v)
    }
}

impl std::ops::Deref for PathBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Renders bytes as text: valid UTF-8 as is, other bytes as `\xNN`; with
/// `backslash`, `\` itself becomes `\\` so the result can be unescaped.
pub fn escape(b: &[u8], backslash: bool) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if backslash && c == '\\' {
                out.push_str("\\\\");
            } else if !backslash && c.is_control() {
                // Shown, never sent to a terminal as is (an archive's names are the archive's).
                for x in c.encode_utf8(&mut [0; 4]).bytes() {
                    out.push_str(&format!("\\x{x:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for &x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out
}

/// Inverse of `escape(_, true)`.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = s.get(i + 2..i + 4).ok_or("truncated \\x escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x escape '{hex}'"))?);
                i += 4;
            }
            _ => return Err("a backslash must be followed by '\\' or 'xNN'".into()),
        }
    }
    Ok(out)
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_str(&B64.encode(&self.0)) } else { s.serialize_bytes(&self.0) }
    }
}

impl Serialize for PathBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.serialize_bytes(&self.0);
        }
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("escaped", &escape(&self.0, true))?;
                m.end()
            }
        }
    }
}

struct BytesVisitor {
    text_is_base64: bool,
}

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.text_is_base64 {
            f.write_str("a byte string or base64 text")
        } else {
            f.write_str("a byte string, a string, or {\"escaped\": ...}")
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        if self.text_is_base64 {
            B64.decode(v).map_err(|e| E::custom(format!("bad base64: {e}")))
        } else {
            Ok(v.as_bytes().to_vec())
        }
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut v = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(v)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<u8>, A::Error> {
        if self.text_is_base64 {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        let mut out = None;
        while let Some(k) = map.next_key::<String>()? {
            if k != "escaped" {
                return Err(de::Error::unknown_field(&k, &["escaped"]));
            }
            let s: String = map.next_value()?;
            out = Some(unescape(&s).map_err(de::Error::custom)?);
        }
        out.ok_or_else(|| de::Error::missing_field("escaped"))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BytesVisitor { text_is_base64: true }).map(Bytes)
    }
}

impl<'de> Deserialize<'de> for PathBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BytesVisitor { text_is_base64: false }).map(PathBytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_escapes_control_characters_and_bad_bytes() {
        let p = PathBytes(b"e\x1b]0;x\x07\n\tcaf\xe9 \xc2\x9b ok/\\".to_vec());
        assert_eq!(p.to_string(), "e\\x1b]0;x\\x07\\x0a\\x09caf\\xe9 \\xc2\\x9b ok/\\");
        // The reversible form is unchanged.
        assert_eq!(escape(b"a\nb\\", true), "a\nb\\\\");
    }
}
