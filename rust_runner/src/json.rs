//! A JSON reader that keeps what the pixel-program rules need and serde_json
//! throws away: every key as written (duplicates are errors, not overwrites)
//! and whether a number was written as an integer (`-0` is one, `3.0` is not).
//! It accepts what Python's `json.loads` accepts, minus what the Python reader
//! (`auto_gvpie/jsontext.py`) refuses too: `NaN`/`Infinity`, numbers longer
//! than 100 characters or too large for a finite float, nesting deeper than
//! 512 levels, and unpaired surrogate escapes in keys; in string values they
//! are kept track of, since the validator names the field they spoil.

use std::fmt;

/// Nesting deeper than this is refused rather than risking the stack.
pub const MAX_DEPTH: usize = 512;
/// Longer numbers are refused, as by the Python reader (`auto_gvpie/jsontext.py`).
pub const MAX_NUMBER_CHARS: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// An integer literal that fits i128.
    Int(i128),
    /// An integer literal too long for i128, as written (out of every range).
    BigInt(String),
    Float(f64),
    Str(String),
    /// A string value with an unpaired surrogate escape (each one read as U+FFFD).
    UnpairedStr(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid JSON at line {} column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for SyntaxError {}

pub fn parse(text: &str) -> Result<Json, SyntaxError> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        unpaired: false,
    };
    reader.skip_whitespace();
    let value = reader.value(0)?;
    reader.skip_whitespace();
    if reader.pos < reader.bytes.len() {
        return reader.error("extra data after the document");
    }
    Ok(value)
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Set while reading a string that had an unpaired surrogate escape.
    unpaired: bool,
}

impl Reader<'_> {
    fn error<T>(&self, message: impl Into<String>) -> Result<T, SyntaxError> {
        let before = &self.text[..self.pos.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Err(SyntaxError {
            line,
            column,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), SyntaxError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.error(format!("expecting {what}"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, SyntaxError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => {
                let s = self.string()?;
                Ok(if self.unpaired {
                    Json::UnpairedStr(s)
                } else {
                    Json::Str(s)
                })
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => {
                for (word, value) in [
                    ("true", Json::Bool(true)),
                    ("false", Json::Bool(false)),
                    ("null", Json::Null),
                ] {
                    if self.bytes[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(value);
                    }
                }
                self.error("expecting a value")
            }
        }
    }

    fn nest(&self, depth: usize) -> Result<(), SyntaxError> {
        if depth > MAX_DEPTH {
            return self.error(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<Json, SyntaxError> {
        self.nest(depth)?;
        self.pos += 1;
        let mut entries = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(entries));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return self.error("expecting a property name in double quotes");
            }
            let key = self.string()?;
            if self.unpaired {
                return self.error("unpaired surrogate in a property name");
            }
            self.skip_whitespace();
            self.expect(b':', "':' delimiter")?;
            self.skip_whitespace();
            let value = self.value(depth)?;
            entries.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(entries));
                }
                _ => return self.error("expecting ',' delimiter"),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, SyntaxError> {
        self.nest(depth)?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.skip_whitespace();
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                _ => return self.error("expecting ',' delimiter"),
            }
        }
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.pos += 1;
        self.unpaired = false;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // Splitting only at ASCII bytes keeps the slice on char boundaries.
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                None => return self.error("unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    out.push(self.escape()?);
                }
                Some(_) => return self.error("invalid control character in string"),
            }
        }
    }

    fn escape(&mut self) -> Result<char, SyntaxError> {
        let Some(b) = self.peek() else {
            return self.error("unterminated string");
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                if (0xD800..0xDC00).contains(&unit) && self.bytes[self.pos..].starts_with(b"\\u") {
                    let mark = self.pos;
                    self.pos += 2;
                    let low = self.hex4()?;
                    if (0xDC00..0xE000).contains(&low) {
                        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        return Ok(char::from_u32(code).unwrap_or('\u{fffd}'));
                    }
                    // Not a pair: the next escape is read on its own.
                    self.pos = mark;
                }
                char::from_u32(unit).unwrap_or_else(|| {
                    self.unpaired = true;
                    '\u{fffd}'
                })
            }
            _ => return self.error("invalid \\escape"),
        })
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let digits = self.bytes.get(self.pos..self.pos + 4).unwrap_or(b"");
        if digits.len() != 4 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return self.error("invalid \\uXXXX escape");
        }
        self.pos += 4;
        Ok(u32::from_str_radix(std::str::from_utf8(digits).unwrap_or("0"), 16).unwrap_or(0))
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Json, SyntaxError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.error("expecting a value"),
        }
        let int_end = self.pos;
        // A fraction or exponent only belongs to the number when digits follow,
        // as in Python's scanner ("1." is "1" followed by garbage).
        if self.peek() == Some(b'.') && matches!(self.bytes.get(self.pos + 1), Some(b'0'..=b'9')) {
            self.pos += 1;
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let mark = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                self.pos = mark;
            }
        }
        let literal = &self.text[start..self.pos];
        if literal.len() > MAX_NUMBER_CHARS {
            self.pos = start;
            return self.error(format!(
                "a number of {} characters (at most {MAX_NUMBER_CHARS})",
                literal.len()
            ));
        }
        if self.pos == int_end {
            return Ok(literal
                .parse::<i128>()
                .map_or_else(|_| Json::BigInt(literal.to_owned()), Json::Int));
        }
        let value = literal.parse::<f64>().unwrap_or(f64::NAN);
        if !value.is_finite() {
            self.pos = start;
            return self.error(format!("the number {literal} is too large"));
        }
        Ok(Json::Float(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(entries: &[(&str, Json)]) -> Json {
        Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn integers_are_told_from_other_numbers() {
        assert_eq!(parse("-0").unwrap(), Json::Int(0));
        assert_eq!(parse("12").unwrap(), Json::Int(12));
        assert_eq!(parse("3.0").unwrap(), Json::Float(3.0));
        assert_eq!(parse("3e0").unwrap(), Json::Float(3.0));
        assert_eq!(parse("-2.5E-1").unwrap(), Json::Float(-0.25));
        let big = "123456789012345678901234567890123456789012";
        assert_eq!(parse(big).unwrap(), Json::BigInt(big.into()));
        assert_eq!(parse("1e-400").unwrap(), Json::Float(0.0));
    }

    #[test]
    fn refuses_huge_and_long_numbers_where_they_start() {
        let err = parse("1e400").unwrap_err();
        assert_eq!((err.line, err.column), (1, 1));
        assert_eq!(err.message, "the number 1e400 is too large");
        assert!(parse("[-1e400]").unwrap_err().message.contains("too large"));
        let longest = "9".repeat(MAX_NUMBER_CHARS);
        assert!(matches!(parse(&longest).unwrap(), Json::BigInt(_)));
        let digits = format!("{{\"x\":\n  {}}}", "9".repeat(5000));
        let err = parse(&digits).unwrap_err();
        assert_eq!((err.line, err.column), (2, 3));
        assert_eq!(err.message, "a number of 5000 characters (at most 100)");
        let fraction = format!("0.{}", "1".repeat(MAX_NUMBER_CHARS - 1));
        assert!(parse(&fraction)
            .unwrap_err()
            .message
            .starts_with("a number of 101"));
    }

    #[test]
    fn keeps_duplicate_keys_in_order() {
        assert_eq!(
            parse(r#" {"a": 1, "b": [true, null], "a": "x"} "#).unwrap(),
            obj(&[
                ("a", Json::Int(1)),
                ("b", Json::Array(vec![Json::Bool(true), Json::Null])),
                ("a", Json::Str("x".into()))
            ])
        );
    }

    #[test]
    fn decodes_escapes_and_surrogate_pairs() {
        assert_eq!(
            parse(r#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00é""#).unwrap(),
            Json::Str("a\"\\/\u{8}\u{c}\n\r\té😀é".into())
        );
    }

    #[test]
    fn marks_strings_with_unpaired_surrogates() {
        assert_eq!(
            parse(r#""\ud800""#).unwrap(),
            Json::UnpairedStr("\u{fffd}".into())
        );
        assert_eq!(
            parse(r#""a\udc00\ud83d\ude00""#).unwrap(),
            Json::UnpairedStr("a\u{fffd}😀".into())
        );
        assert_eq!(
            parse(r#""\ud800\u0041""#).unwrap(),
            Json::UnpairedStr("\u{fffd}A".into())
        );
        assert_eq!(
            parse(r#"["\ud800", "ok"]"#).unwrap(),
            Json::Array(vec![
                Json::UnpairedStr("\u{fffd}".into()),
                Json::Str("ok".into()),
            ])
        );
        assert!(parse(r#"{"\ud800": 1}"#).is_err());
    }

    #[test]
    fn rejects_what_python_rejects() {
        for bad in [
            "",
            "01",
            "1.",
            ".5",
            "-",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "{'a': 1}",
            "NaN",
            "Infinity",
            "-Infinity",
            "\"tab\there\"",
            "[1] x",
            "\"\\x41\"",
            "\u{feff}{}",
            "tru",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let err = parse("{\n  \"a\": 1\n  \"b\": 2}").unwrap_err();
        assert_eq!((err.line, err.column), (3, 3));
        assert!(err.message.contains("','"), "{}", err.message);
    }

    #[test]
    fn limits_nesting() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(&deep).is_err());
        let hostile = format!("{{\"ops\": [{}", "[".repeat(100_000));
        let err = parse(&hostile).unwrap_err();
        assert_eq!(
            err.message,
            format!("nested deeper than {MAX_DEPTH} levels")
        );
        assert!(parse(&"{\"a\":".repeat(100_000)).is_err());
    }
}
