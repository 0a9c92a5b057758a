//! A small, strict JSON reader and writer for the agent's socket protocol.
//!
//! Messages come from clients that may be buggy or hostile, so the parser
//! accepts RFC 8259 and nothing more (no comments, trailing commas, `NaN`,
//! ...) and defends itself:
//!
//! - it never panics, whatever the input;
//! - nesting is capped at [`MAX_DEPTH`], so its recursion is bounded;
//! - it never allocates from a size or count claimed by the input, so memory
//!   grows linearly with the input (the tree costs at most a few dozen bytes
//!   per input byte, for inputs like `[0,0,0,...]`);
//! - duplicate keys are rejected, because two readers could disagree about
//!   which one wins;
//! - duplicate detection stays linear-time for huge objects, so a hostile
//!   object cannot make it quadratic.
//!
//! It has no dependencies: the protocol is small and the dependency tree
//! stays lean.

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, RandomState};

/// A JSON value. Objects keep their keys in insertion order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number; see [`Number`].
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object, members in insertion order. [`parse`] guarantees the keys
    /// are distinct, and so do [`Value::with`] and [`Value::set`].
    Object(Vec<(String, Value)>),
}

/// A JSON number, kept exact when it is an integer.
///
/// [`parse`] and the `From` conversions use `U64` for every non-negative
/// integer and `I64` only for negative ones, so each integer has exactly one
/// representation and the derived `PartialEq` compares them correctly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A non-negative integer.
    U64(u64),
    /// A negative integer. The one exception is the literal `-0`, which
    /// parses as `I64(0)` (and is written back as `-0`).
    I64(i64),
    /// Any other number: one with a fraction or an exponent, or an integer
    /// outside the ranges above (which loses precision).
    F64(f64),
}

/// Deepest nesting of arrays/objects accepted by [`parse`].
///
/// Protocol messages are shallow; the cap bounds the parser's recursion and
/// the work a hostile client can cause.
pub const MAX_DEPTH: usize = 32;

/// Why [`parse`] rejected its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the input where the problem was found.
    pub offset: usize,
    /// A short, fixed description, e.g. `"expected ':'"`.
    pub reason: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// Parses exactly one JSON value from `input` (RFC 8259, strict).
///
/// The whole input must be valid UTF-8, and only JSON whitespace may surround
/// the value. Integers that fit are kept exact ([`Number::U64`] /
/// [`Number::I64`]); `-0` becomes `Number::I64(0)`, so `as_u64` returns `None`
/// for it while `as_i64` returns `Some(0)`. Other numbers become
/// [`Number::F64`], and ones too large for an `f64` are an error.
pub fn parse(input: &[u8]) -> Result<Value, ParseError> {
    // Validating everything first means every later slice, always cut at an
    // ASCII delimiter, is a valid `&str`, and strings need no second check.
    let text = std::str::from_utf8(input).map_err(|e| ParseError {
        offset: e.valid_up_to(),
        reason: "invalid UTF-8",
    })?;
    let mut parser = Parser {
        text,
        bytes: input,
        pos: 0,
    };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos < input.len() {
        return Err(parser.error("trailing characters"));
    }
    Ok(value)
}

const EOF: &str = "unexpected end of input";

/// Recursive descent over the input; `pos` only moves forward.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, reason: &'static str) -> ParseError {
        ParseError {
            offset: self.pos,
            reason,
        }
    }

    /// `reason` at the current byte, or the end-of-input error if there is
    /// none: "expected X" at the end would hide the real problem.
    fn unexpected(&self, reason: &'static str) -> ParseError {
        if self.pos < self.bytes.len() {
            self.error(reason)
        } else {
            self.error(EOF)
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or(&[])
    }

    /// The text from `from` to the current position.
    fn slice(&self, from: usize) -> Result<&'a str, ParseError> {
        // Both ends sit on ASCII bytes of validated UTF-8, so this cannot
        // fail; the error keeps the parser panic-free by construction anyway.
        self.text.get(from..self.pos).ok_or(ParseError {
            offset: from,
            reason: "invalid UTF-8",
        })
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Skips digits and says whether there was at least one.
    fn digits(&mut self) -> bool {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos > start
    }

    /// One value; `depth` is the number of containers around it.
    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            _ => Err(self.unexpected("expected value")),
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, ParseError> {
        let rest = self.rest();
        if rest.starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else if word.as_bytes().starts_with(rest) {
            // A literal cut short by the end of input, e.g. "tru".
            Err(self.error_at(self.bytes.len(), EOF))
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn error_at(&self, offset: usize, reason: &'static str) -> ParseError {
        ParseError { offset, reason }
    }

    fn number(&mut self) -> Result<Number, ParseError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.error("leading zero in number"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.unexpected("invalid number")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            if !self.digits() {
                return Err(self.unexpected("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.digits() {
                return Err(self.unexpected("invalid number"));
            }
        }
        let text = self.slice(start)?;
        if integer {
            let exact = if negative {
                text.parse().ok().map(Number::I64)
            } else {
                text.parse().ok().map(Number::U64)
            };
            if let Some(n) = exact {
                return Ok(n);
            }
            // Out of range: still a valid JSON number, only not exact.
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Number::F64(f)),
            _ => Err(self.error_at(start, "number out of range")),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1; // the opening quote, seen by the caller
        let mut out = String::new();
        // Unescaped runs are copied whole rather than char by char.
        let mut run = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.error(EOF)),
                Some(b'"') => {
                    out.push_str(self.slice(run)?);
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(self.slice(run)?);
                    out.push(self.escape()?);
                    run = self.pos;
                }
                Some(0x00..=0x1f) => return Err(self.error("control character in string")),
                Some(_) => self.pos += 1,
            }
        }
    }

    /// One escape sequence, starting at its backslash.
    fn escape(&mut self) -> Result<char, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let c = match self.peek() {
            None => return Err(self.error(EOF)),
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                return self.unicode_escape(start);
            }
            Some(_) => return Err(self.error_at(start, "invalid escape")),
        };
        self.pos += 1;
        Ok(c)
    }

    /// The rest of a `\uXXXX` escape that started at `start`, including the
    /// second half of a surrogate pair.
    fn unicode_escape(&mut self, start: usize) -> Result<char, ParseError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                // A high surrogate means nothing without a low one right after.
                if !self.rest().starts_with(b"\\u") {
                    return Err(self.error_at(start, "lone surrogate"));
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error_at(start, "lone surrogate"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error_at(start, "lone surrogate")),
            _ => first,
        };
        char::from_u32(code).ok_or(self.error_at(start, "invalid \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut code = 0;
        for _ in 0..4 {
            let Some(b) = self.peek() else {
                return Err(self.error(EOF));
            };
            let Some(digit) = char::from(b).to_digit(16) else {
                return Err(self.error("invalid \\u escape"));
            };
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.unexpected("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        self.pos += 1;
        let mut members: Vec<(String, Value)> = Vec::new();
        let mut keys = KeySet::default();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected("expected string key"));
            }
            let key_start = self.pos;
            let key = self.string()?;
            if keys.is_duplicate(&members, &key) {
                return Err(self.error_at(key_start, "duplicate key"));
            }
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.unexpected("expected ':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.unexpected("expected ',' or '}'")),
            }
        }
    }
}

/// Duplicate-key detection for one object being parsed.
///
/// Small objects (the usual case) are scanned linearly, which needs no
/// allocation. Past [`KeySet::LINEAR`] members a scan per key would make a
/// hostile object quadratic, so the keys' hashes go into a set; the hasher is
/// randomly keyed, so collisions cannot be forced, and a hash hit is
/// confirmed by a scan (it only happens once: on a real duplicate, or on a
/// 64-bit collision, which is harmless).
#[derive(Default)]
struct KeySet {
    hashes: Option<(RandomState, HashSet<u64>)>,
}

impl KeySet {
    const LINEAR: usize = 8;

    fn is_duplicate(&mut self, members: &[(String, Value)], key: &str) -> bool {
        let scan = || members.iter().any(|(k, _)| k == key);
        if members.len() < Self::LINEAR {
            return scan();
        }
        let (state, hashes) = self.hashes.get_or_insert_with(|| {
            let state = RandomState::new();
            let hashes = members.iter().map(|(k, _)| state.hash_one(k)).collect();
            (state, hashes)
        });
        !hashes.insert(state.hash_one(key)) && scan()
    }
}

impl Value {
    /// The member `key` of an object; `None` if absent or not an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The number as a `u64`, if it is a [`Number::U64`].
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(Number::U64(n)) => Some(*n),
            _ => None,
        }
    }

    /// The number as an `i64`, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(Number::U64(n)) => i64::try_from(*n).ok(),
            Value::Number(Number::I64(n)) => Some(*n),
            _ => None,
        }
    }

    /// Any number as an `f64` (large integers lose precision).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            // The casts are the documented, intended rounding to nearest.
            Value::Number(Number::U64(n)) => Some(*n as f64),
            Value::Number(Number::I64(n)) => Some(*n as f64),
            Value::Number(Number::F64(f)) => Some(*f),
            _ => None,
        }
    }

    /// The string's contents, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The members in order, if this is an object.
    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(members) => Some(members),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the value's type for error messages: "null",
    /// "boolean", "number", "string", "array", "object".
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// An empty object.
    pub fn object() -> Value {
        Value::Object(Vec::new())
    }

    /// Builder: appends (or replaces) member `key` of an object and returns
    /// it.
    ///
    /// # Panics
    ///
    /// If `self` is not an object: that is a programming error, not bad input.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Value {
        self.set(key, value);
        self
    }

    /// Appends member `key`, or replaces its value in place (keeping its
    /// position) if it exists.
    ///
    /// # Panics
    ///
    /// If `self` is not an object: that is a programming error, not bad input.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self {
            Value::Object(members) => match members.iter_mut().find(|(k, _)| k == key) {
                Some((_, slot)) => *slot = value,
                None => members.push((key.to_owned(), value)),
            },
            other => panic!("Value::set on {}, not an object", other.type_name()),
        }
    }

    /// Compact serialization (no spaces), valid JSON.
    pub fn to_json(&self) -> String {
        self.to_string()
    }

    /// Indented serialization (2 spaces) for humans, without a trailing
    /// newline.
    pub fn to_json_pretty(&self) -> String {
        Pretty(self).to_string()
    }
}

/// Compact, same as [`Value::to_json`].
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value(f, self, false, 0)
    }
}

/// Lets `to_json_pretty` reuse the `Display` machinery.
struct Pretty<'a>(&'a Value);

impl fmt::Display for Pretty<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value(f, self.0, true, 0)
    }
}

/// Writes `value`; `level` is its nesting level, used only when `pretty`.
fn write_value(w: &mut impl fmt::Write, value: &Value, pretty: bool, level: usize) -> fmt::Result {
    match value {
        Value::Null => w.write_str("null"),
        Value::Bool(b) => w.write_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(w, *n),
        Value::String(s) => write_string(w, s),
        Value::Array(items) if items.is_empty() => w.write_str("[]"),
        Value::Array(items) => {
            w.write_char('[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                newline(w, pretty, level + 1)?;
                write_value(w, item, pretty, level + 1)?;
            }
            newline(w, pretty, level)?;
            w.write_char(']')
        }
        Value::Object(members) if members.is_empty() => w.write_str("{}"),
        Value::Object(members) => {
            w.write_char('{')?;
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                newline(w, pretty, level + 1)?;
                write_string(w, key)?;
                w.write_str(if pretty { ": " } else { ":" })?;
                write_value(w, item, pretty, level + 1)?;
            }
            newline(w, pretty, level)?;
            w.write_char('}')
        }
    }
}

fn newline(w: &mut impl fmt::Write, pretty: bool, level: usize) -> fmt::Result {
    if pretty {
        w.write_char('\n')?;
        for _ in 0..level {
            w.write_str("  ")?;
        }
    }
    Ok(())
}

fn write_number(w: &mut impl fmt::Write, n: Number) -> fmt::Result {
    match n {
        Number::U64(n) => write!(w, "{n}"),
        // Only the literal `-0` yields I64(0); writing "0" would read back as
        // U64(0) and break the round trip.
        Number::I64(0) => w.write_str("-0"),
        Number::I64(n) => write!(w, "{n}"),
        // JSON has no NaN or infinity.
        Number::F64(f) if !f.is_finite() => w.write_str("null"),
        Number::F64(f) => {
            let text = f.to_string();
            w.write_str(&text)?;
            // "1" would read back as an integer; "1.0" stays a float.
            if !text.contains(['.', 'e', 'E']) {
                w.write_str(".0")?;
            }
            Ok(())
        }
    }
}

fn write_string(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` and `run` sit next to ASCII bytes, so both are char boundaries.
        w.write_str(&s[run..i])?;
        if escape.is_empty() {
            write!(w, "\\u{b:04x}")?;
        } else {
            w.write_str(escape)?;
        }
        run = i + 1;
    }
    w.write_str(&s[run..])?;
    w.write_char('"')
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Number(Number::U64(n))
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Value {
        Value::from(u64::from(n))
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Value {
        // usize is at most 64 bits on every target Rust supports; saturate
        // rather than panic should that ever change.
        Value::from(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        // Non-negative integers are always U64, so equal numbers compare equal.
        match u64::try_from(n) {
            Ok(n) => Value::Number(Number::U64(n)),
            Err(_) => Value::Number(Number::I64(n)),
        }
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Value {
        Value::from(i64::from(n))
    }
}

/// Non-finite values are kept, but serialize as `null`.
impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Number(Number::F64(f))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::String(s.clone())
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Value {
        Value::Array(items)
    }
}

/// `None` becomes `null`.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Value {
        match parse(s.as_bytes()) {
            Ok(v) => v,
            Err(e) => panic!("{s:?} rejected: {e}"),
        }
    }

    fn err(input: &[u8]) -> ParseError {
        match parse(input) {
            Ok(v) => panic!("{:?} accepted as {v:?}", String::from_utf8_lossy(input)),
            Err(e) => e,
        }
    }

    fn reason(s: &str) -> &'static str {
        err(s.as_bytes()).reason
    }

    fn num(n: Number) -> Value {
        Value::Number(n)
    }

    fn obj(members: &[(&str, Value)]) -> Value {
        Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn scalars() {
        assert_eq!(ok("null"), Value::Null);
        assert_eq!(ok("true"), Value::Bool(true));
        assert_eq!(ok("false"), Value::Bool(false));
        assert_eq!(ok("0"), num(Number::U64(0)));
        assert_eq!(ok("42"), num(Number::U64(42)));
        assert_eq!(ok("-7"), num(Number::I64(-7)));
        assert_eq!(ok("1.5"), num(Number::F64(1.5)));
        assert_eq!(ok("-0.25"), num(Number::F64(-0.25)));
        assert_eq!(ok("1e2"), num(Number::F64(100.0)));
        assert_eq!(ok("1E+2"), num(Number::F64(100.0)));
        assert_eq!(ok("25e-2"), num(Number::F64(0.25)));
        assert_eq!(ok("0.0"), num(Number::F64(0.0)));
        assert_eq!(ok("1e-400"), num(Number::F64(0.0)));
        assert_eq!(ok("\"\""), Value::String(String::new()));
        assert_eq!(ok("\"héllo ✓\""), Value::String("héllo ✓".into()));
        assert_eq!(ok(" \t\r\n true \n"), Value::Bool(true));
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            ok(r#""a\"b\\c\/d\be\ff\ng\rh\ti""#).as_str(),
            Some("a\"b\\c/d\u{8}e\u{c}f\ng\rh\ti")
        );
        assert_eq!(ok(r#""\u0041\u00e9\u20AC""#).as_str(), Some("Aé€"));
        assert_eq!(ok(r#""\ud83d\ude00!""#).as_str(), Some("😀!"));
        assert_eq!(ok(r#""\uDBFF\uDFFF""#).as_str(), Some("\u{10FFFF}"));
        assert_eq!(ok(r#""\u0000""#).as_str(), Some("\0"));
        // Non-ASCII bytes 0x7f and above are not control characters.
        assert_eq!(ok("\"\u{7f}\u{80}\"").as_str(), Some("\u{7f}\u{80}"));
    }

    #[test]
    fn containers() {
        assert_eq!(ok("[]"), Value::Array(vec![]));
        assert_eq!(ok("{}"), Value::object());
        assert_eq!(ok(" [ ] "), Value::Array(vec![]));
        assert_eq!(ok("{ }"), Value::object());
        assert_eq!(
            ok(r#"[1, "two", null, [true], {"k": -3}]"#),
            Value::Array(vec![
                1u64.into(),
                "two".into(),
                Value::Null,
                vec![Value::Bool(true)].into(),
                obj(&[("k", (-3i64).into())]),
            ])
        );
        let v = ok(r#"{"z": 1, "a": {"nested": [1.5]}, "m": "x"}"#);
        let keys: Vec<&str> = v
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["z", "a", "m"], "insertion order kept");
        assert_eq!(
            v.get("a").and_then(|a| a.get("nested")),
            Some(&vec![Value::from(1.5)].into())
        );
        // Keys with different escapes but equal contents, and the empty key.
        assert_eq!(
            ok(r#"{"": 1, "\u0062": 2}"#).get("b"),
            Some(&Value::from(2u64))
        );
    }

    #[test]
    fn integer_limits() {
        assert_eq!(ok("18446744073709551615").as_u64(), Some(u64::MAX));
        assert_eq!(ok("-9223372036854775808").as_i64(), Some(i64::MIN));
        assert_eq!(ok("-9223372036854775808"), num(Number::I64(i64::MIN)));
        assert_eq!(
            ok("18446744073709551616"),
            num(Number::F64(18446744073709551616.0))
        );
        assert_eq!(
            ok("-9223372036854775809"),
            num(Number::F64(-9223372036854775808.0))
        );
        assert_eq!(ok("9223372036854775807").as_i64(), Some(i64::MAX));
        assert_eq!(ok("9223372036854775808").as_i64(), None);
        assert_eq!(ok("100000000000000000000000000000").as_u64(), None);
    }

    #[test]
    fn negative_zero() {
        let v = ok("-0");
        assert_eq!(v, num(Number::I64(0)));
        assert_eq!(v.as_u64(), None);
        assert_eq!(v.as_i64(), Some(0));
        assert_eq!(v.to_json(), "-0");
        assert_eq!(ok(&v.to_json()), v);
        assert_eq!(ok("-0.0"), num(Number::F64(-0.0)));
        assert!(ok("-0.0").as_f64().unwrap().is_sign_negative());
    }

    #[test]
    fn rejects_bad_grammar() {
        let cases: &[(&str, &str, usize)] = &[
            ("", EOF, 0),
            ("   ", EOF, 3),
            ("[1,]", "expected value", 3),
            ("[1 2]", "expected ',' or ']'", 3),
            ("{\"a\":1,}", "expected string key", 7),
            ("{\"a\" 1}", "expected ':'", 5),
            ("{\"a\":1 \"b\":2}", "expected ',' or '}'", 7),
            ("{a:1}", "expected string key", 1),
            ("{'a':1}", "expected string key", 1),
            ("['a']", "expected value", 1),
            ("[1] // c", "trailing characters", 4),
            ("/* c */ 1", "expected value", 0),
            ("01", "leading zero in number", 1),
            ("-01", "leading zero in number", 2),
            ("+1", "expected value", 0),
            (".5", "expected value", 0),
            ("1.", EOF, 2),
            ("1.e3", "invalid number", 2),
            ("1e", EOF, 2),
            ("1e+", EOF, 3),
            ("1ex", "invalid number", 2),
            ("-", EOF, 1),
            ("-a", "invalid number", 1),
            ("NaN", "expected value", 0),
            ("Infinity", "expected value", 0),
            ("-Infinity", "invalid number", 1),
            ("1e400", "number out of range", 0),
            ("[-1e999]", "number out of range", 1),
            ("tru", EOF, 3),
            ("trux", "invalid literal", 0),
            ("nul", EOF, 3),
            ("True", "expected value", 0),
            ("true false", "trailing characters", 5),
            ("{} x", "trailing characters", 3),
            ("1 1", "trailing characters", 2),
            ("\"abc", EOF, 4),
            ("[", EOF, 1),
            ("[1", EOF, 2),
            ("{", EOF, 1),
            ("{\"a\"", EOF, 4),
            ("{\"a\":", EOF, 5),
            ("\u{feff}1", "expected value", 0),
            ("\u{a0}1", "expected value", 0),
        ];
        for &(input, want, offset) in cases {
            assert_eq!(
                err(input.as_bytes()),
                ParseError {
                    offset,
                    reason: want
                },
                "input {input:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_strings() {
        assert_eq!(reason("\"a\nb\""), "control character in string");
        assert_eq!(err(b"\"ab\x01\"").offset, 3);
        assert_eq!(reason("\"\t\""), "control character in string");
        assert_eq!(reason("\"\u{1f}\""), "control character in string");
        assert_eq!(
            err(br#""\x""#),
            ParseError {
                offset: 1,
                reason: "invalid escape"
            }
        );
        assert_eq!(reason(r#""\'""#), "invalid escape");
        assert_eq!(reason(r#""\U0041""#), "invalid escape");
        assert_eq!(
            err(br#""\u12G4""#),
            ParseError {
                offset: 5,
                reason: "invalid \\u escape"
            }
        );
        assert_eq!(reason(r#""\u12""#), "invalid \\u escape");
        assert_eq!(reason(r#""\u12"#), EOF);
        assert_eq!(reason("\"\\"), EOF);
        // Lone, reversed and mismatched surrogates.
        assert_eq!(
            err(br#""x\ud800""#),
            ParseError {
                offset: 2,
                reason: "lone surrogate"
            }
        );
        assert_eq!(reason(r#""\ud800x""#), "lone surrogate");
        assert_eq!(reason(r#""\udc00""#), "lone surrogate");
        assert_eq!(reason(r#""\ude00\ud83d""#), "lone surrogate");
        assert_eq!(reason(r#""\ud83d\u0041""#), "lone surrogate");
        assert_eq!(reason(r#""\ud83d\ud83d""#), "lone surrogate");
        assert_eq!(reason(r#""\ud83d\n""#), "lone surrogate");
        assert_eq!(reason(r#""\ud83d\u""#), "invalid \\u escape");
    }

    #[test]
    fn rejects_invalid_utf8() {
        assert_eq!(
            err(b"\xff"),
            ParseError {
                offset: 0,
                reason: "invalid UTF-8"
            }
        );
        assert_eq!(err(b"\"ab\xc3\"").offset, 3);
        assert_eq!(err(b"\"ab\xc3\"").reason, "invalid UTF-8");
        assert_eq!(err(b"[\"\xed\xa0\x80\"]").offset, 2, "encoded surrogate");
        assert_eq!(err(b"\"\xc0\xaf\"").offset, 1, "overlong");
        assert_eq!(err(b"1 \x80").offset, 2, "outside strings too");
    }

    #[test]
    fn rejects_duplicate_keys() {
        assert_eq!(
            err(br#"{"a":1,"b":2,"a":3}"#),
            ParseError {
                offset: 13,
                reason: "duplicate key"
            }
        );
        assert_eq!(reason(r#"{"a":1,"\u0061":2}"#), "duplicate key");
        assert_eq!(reason(r#"{"":1,"":2}"#), "duplicate key");
        // Nested objects have their own key spaces.
        assert!(parse(br#"{"a":{"a":1},"b":{"a":2}}"#).is_ok());
        // Past the linear-scan threshold, at every position.
        for dup in 0..20 {
            let mut text = String::from("{");
            for i in 0..20 {
                text.push_str(&format!("\"k{i}\":{i},"));
            }
            text.push_str(&format!("\"k{dup}\":0}}"));
            assert_eq!(reason(&text), "duplicate key", "{text}");
            let distinct = text.replace(&format!("\"k{dup}\":0}}"), "\"new\":0}");
            assert_eq!(ok(&distinct).as_object().map(<[_]>::len), Some(21));
        }
    }

    #[test]
    fn depth_limit() {
        let nest = |depth: usize, open: &str, close: &str| {
            format!("{}1{}", open.repeat(depth), close.repeat(depth))
        };
        assert!(parse(nest(MAX_DEPTH, "[", "]").as_bytes()).is_ok());
        assert!(parse(nest(MAX_DEPTH, "{\"a\":", "}").as_bytes()).is_ok());
        assert!(parse(nest(MAX_DEPTH / 2, "[{\"a\":", "}]").as_bytes()).is_ok());
        assert_eq!(
            err(nest(MAX_DEPTH + 1, "[", "]").as_bytes()),
            ParseError {
                offset: MAX_DEPTH,
                reason: "nesting too deep"
            }
        );
        assert_eq!(
            err(nest(MAX_DEPTH + 1, "{\"a\":", "}").as_bytes()),
            ParseError {
                offset: MAX_DEPTH * 5,
                reason: "nesting too deep"
            }
        );
        // Hostile: a megabyte of openers fails fast, without deep recursion.
        let deep = vec![b'['; 1 << 20];
        assert_eq!(err(&deep).offset, MAX_DEPTH);
        assert_eq!(err(&deep).reason, "nesting too deep");
    }

    #[test]
    fn accessors() {
        let v = ok(r#"{"n":5,"neg":-5,"f":2.5,"s":"x","b":true,"a":[1],"o":{},"z":null}"#);
        let get = |k: &str| v.get(k).unwrap();
        assert_eq!(get("n").as_u64(), Some(5));
        assert_eq!(get("n").as_i64(), Some(5));
        assert_eq!(get("n").as_f64(), Some(5.0));
        assert_eq!(get("neg").as_u64(), None);
        assert_eq!(get("neg").as_i64(), Some(-5));
        assert_eq!(get("neg").as_f64(), Some(-5.0));
        assert_eq!(get("f").as_u64(), None);
        assert_eq!(get("f").as_i64(), None);
        assert_eq!(get("f").as_f64(), Some(2.5));
        assert_eq!(get("s").as_str(), Some("x"));
        assert_eq!(get("s").as_u64(), None);
        assert_eq!(get("b").as_bool(), Some(true));
        assert_eq!(get("a").as_array(), Some(&[Value::from(1u64)][..]));
        assert_eq!(get("o").as_object(), Some(&[][..]));
        assert!(get("z").is_null());
        assert!(!get("b").is_null());
        assert_eq!(v.get("missing"), None);
        assert_eq!(get("a").get("n"), None, "get on a non-object");
        assert_eq!(get("s").as_array(), None);
        assert_eq!(get("a").as_object(), None);
        let names: Vec<&str> = v
            .as_object()
            .unwrap()
            .iter()
            .map(|(_, v)| v.type_name())
            .collect();
        assert_eq!(
            names,
            ["number", "number", "number", "string", "boolean", "array", "object", "null"]
        );
    }

    #[test]
    fn builder_and_conversions() {
        let v = Value::object()
            .with("a", 1u32)
            .with("b", "two")
            .with("c", -3i32)
            .with("d", Some(true))
            .with("e", None::<u64>)
            .with("a", 10usize);
        assert_eq!(
            v.to_json(),
            r#"{"a":10,"b":"two","c":-3,"d":true,"e":null}"#
        );
        let mut w = v.clone();
        w.set("b", String::from("deux"));
        let name = String::from("new");
        w.set("f", &name);
        w.set("g", vec![Value::from(0.5), Value::from(7i64)]);
        assert_eq!(
            w.to_json(),
            r#"{"a":10,"b":"deux","c":-3,"d":true,"e":null,"f":"new","g":[0.5,7]}"#
        );
        assert_eq!(w.get("f").and_then(Value::as_str), Some(name.as_str()));
        assert_eq!(
            Value::from(7i64),
            Value::from(7u64),
            "non-negative i64 is U64"
        );
        assert_eq!(Value::from(-7i64), num(Number::I64(-7)));
        assert_eq!(Value::from(0i32), num(Number::U64(0)));
        assert_eq!(Value::from(i64::MIN).as_i64(), Some(i64::MIN));
        assert_eq!(Value::from(false), Value::Bool(false));
        assert_eq!(Value::from(None::<&str>), Value::Null);
        assert_eq!(Value::from(Some("s")), Value::String("s".into()));
    }

    #[test]
    #[should_panic(expected = "not an object")]
    fn with_panics_on_non_objects() {
        let _ = Value::from(1u64).with("a", 1u64);
    }

    #[test]
    #[should_panic(expected = "not an object")]
    fn set_panics_on_non_objects() {
        Value::Array(vec![]).set("a", 1u64);
    }

    #[test]
    fn serialization() {
        assert_eq!(Value::Null.to_json(), "null");
        assert_eq!(
            Value::from("q\"b\\n\nr\rt\tb\u{8}f\u{c}\u{0}\u{1f}\u{7f}é😀/").to_json(),
            r#""q\"b\\n\nr\rt\tb\bf\f\u0000\u001f"#.to_owned() + "\u{7f}é😀/\""
        );
        let f = |x: f64| Value::from(x).to_json();
        assert_eq!(f(1.0), "1.0");
        assert_eq!(f(-2.0), "-2.0");
        assert_eq!(f(0.5), "0.5");
        assert_eq!(f(-0.0), "-0.0");
        assert_eq!(f(1e300), format!("1{}.0", "0".repeat(300)));
        assert_eq!(f(1e-7), "0.0000001");
        assert_eq!(f(f64::NAN), "null");
        assert_eq!(f(f64::INFINITY), "null");
        assert_eq!(f(f64::NEG_INFINITY), "null");
        assert_eq!(Value::from(u64::MAX).to_json(), "18446744073709551615");
        assert_eq!(Value::from(i64::MIN).to_json(), "-9223372036854775808");

        let v = ok(r#"{"a":[1,{"b":null},[]],"c":{},"d":"x"}"#);
        assert_eq!(v.to_json(), r#"{"a":[1,{"b":null},[]],"c":{},"d":"x"}"#);
        assert_eq!(format!("{v}"), v.to_json());
        assert_eq!(
            v.to_json_pretty(),
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    },\n    []\n  ],\n  \"c\": {},\n  \"d\": \"x\"\n}"
        );
        assert_eq!(Value::from(3u64).to_json_pretty(), "3");
    }

    #[test]
    fn round_trip() {
        let docs = [
            "null",
            "[true,false,null]",
            "0",
            "-0",
            "18446744073709551615",
            "-9223372036854775808",
            "18446744073709551616",
            "1.7976931348623157e308",
            "5e-324",
            "-2.5e-10",
            "0.1",
            "123456789.123456789",
            r#""\u0000\u001f\"\\\/\b\f\n\r\t\ud83d\ude00 é""#,
            r#"{"a":{"b":{"c":[1,-1,1.0,"x",{}]}},"":[[]]}"#,
        ];
        for doc in docs {
            let v = ok(doc);
            assert_eq!(ok(&v.to_json()), v, "compact {doc}");
            assert_eq!(ok(&v.to_json_pretty()), v, "pretty {doc}");
            assert_eq!(ok(&v.to_json()).to_json(), v.to_json(), "stable {doc}");
        }
    }

    #[test]
    fn error_display() {
        let e = err(br#"{"key" 1}"#);
        assert_eq!(e.to_string(), "invalid JSON at byte 7: expected ':'");
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.to_string().contains("expected ':'"));
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let seeds: &[&[u8]] = &[
            br#"{"id":1,"op":"preserve","args":{"fd":3,"token":18446744073709551615,"name":"db"}}"#,
            br#"[1,-2,3.5e-3,true,false,null,"s\n\u00e9\ud83d\ude00",[],{},[[[{"a":[]}]]]]"#,
            b"  {\"k\" : [ 0 , -0 , 1E+2 ] , \"\xc3\xa9\" : \"\xe2\x9c\x93\" }  ",
            br#""\"\\\/\b\f\n\r\t""#,
            b"-9223372036854775808",
        ];
        let alphabet = b"{}[]:,\"\\/ \t\n\r0123456789-+.eEtrufalsnbxuUdDcC\x00\x01\x1f\x7f\x80\xbf\xc3\xed\xf0\xff";
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let (mut accepted, mut rejected) = (0, 0);
        for round in 0..20_000 {
            let mut input: Vec<u8> = if round % 8 == 0 {
                let len = rng.below(64);
                (0..len)
                    .map(|_| match rng.below(4) {
                        0 => rng.next() as u8,
                        _ => alphabet[rng.below(alphabet.len())],
                    })
                    .collect()
            } else {
                seeds[rng.below(seeds.len())].to_vec()
            };
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(input.len() + 1);
                let byte = if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len())]
                };
                match rng.below(6) {
                    0 if at < input.len() => input[at] = byte,
                    1 => input.insert(at, byte),
                    2 if at < input.len() => {
                        input.remove(at);
                    }
                    3 => input.truncate(at),
                    4 => {
                        let end = (at + rng.below(16)).min(input.len());
                        let chunk = input[at..end].to_vec();
                        input.splice(at..at, chunk);
                    }
                    5 => {
                        let opener = if rng.below(2) == 0 { "[" } else { "{\"a\":" };
                        let run = opener.repeat(rng.below(40));
                        input.splice(at..at, run.bytes());
                    }
                    _ => {}
                }
            }
            match parse(&input) {
                Ok(v) => {
                    accepted += 1;
                    assert!(std::str::from_utf8(&input).is_ok());
                    assert_eq!(ok(&v.to_json()), v, "round trip of {input:?}");
                }
                Err(e) => {
                    rejected += 1;
                    assert!(e.offset <= input.len(), "{e} for {input:?}");
                }
            }
        }
        // Both paths must really be exercised for the loop to mean anything.
        assert!(accepted > 1000, "accepted {accepted}");
        assert!(rejected > 1000, "rejected {rejected}");
    }

    #[test]
    fn one_mebibyte_array_parses() {
        let mut text = String::from("[");
        let mut count = 0u64;
        while text.len() < 1 << 20 {
            text.push_str(&format!("{},-{}.5,", count * 7919, count));
            count += 2;
        }
        text.push_str("0]");
        let v = parse(text.as_bytes()).unwrap();
        let items = v.as_array().unwrap();
        assert_eq!(items.len() as u64, count + 1);
        assert_eq!(items[2].as_u64(), Some(2 * 7919));
        assert_eq!(items[3].as_f64(), Some(-2.5));
    }

    #[test]
    fn huge_object_duplicate_is_found() {
        let n = 50_000;
        let mut text = String::from("{");
        for i in 0..n {
            text.push_str(&format!("\"key{i}\":{i},"));
        }
        text.push_str("\"key0\":0}");
        assert_eq!(reason(&text), "duplicate key");
        let distinct = text.replace(",\"key0\":0}", "}");
        assert_eq!(ok(&distinct).as_object().map(<[_]>::len), Some(n));
    }
}
