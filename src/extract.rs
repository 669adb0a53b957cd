//! Request extractors that fail the way FastAPI does: a 422 whose `detail` list says where
//! (`["body", "content"]`, `["query", "limit"]`, `["path", "chat_id"]`) and what was wrong.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::{ApiError, ValidationIssue};

/// Extra checks a body runs after it parsed (lengths, ranges).
pub trait Validate {
    /// Issues found; empty when the value is acceptable.
    fn validate(&self) -> Vec<ValidationIssue> {
        Vec::new()
    }
}

/// A JSON body, parsed with field paths in its errors and then validated.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T> FromRequest for ApiJson<T>
where
    T: DeserializeOwned + Validate + 'static,
{
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes.await.map_err(|e| {
                if e.as_response_error().status_code()
                    == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE
                {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(format!("could not read the body: {e}").into())
                }
            })?;
            parse_json_body(&bytes).map(ApiJson)
        })
    }
}

/// Parses and validates a JSON body held in memory. Every body is a JSON object: anything
/// else that is valid JSON is `model_attributes_type` at `["body"]`, as pydantic answers
/// (serde alone would build a struct from an array of its fields).
pub fn parse_json_body<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, ApiError> {
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(ApiError::invalid(
            vec![json!("body")],
            "missing",
            "Field required",
        ));
    };
    if *first != b'{' {
        parse_json_value::<serde::de::IgnoredAny>(bytes, "body")?;
        return Err(ApiError::invalid(
            vec![json!("body")],
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
        ));
    }
    let value: T = parse_json_value(bytes, "body")?;
    let issues = value.validate();
    if issues.is_empty() {
        Ok(value)
    } else {
        Err(ApiError::Validation(issues))
    }
}

/// Deserialises JSON, mapping serde's errors to pydantic-style issues under `root`.
/// Anything after the value other than JSON whitespace (`{"a":1}{"a":2}`, `{} garbage`) is
/// `json_invalid`, as FastAPI answers.
pub fn parse_json_value<T: DeserializeOwned>(bytes: &[u8], root: &str) -> Result<T, ApiError> {
    let json_invalid = |inner: &serde_json::Error| {
        ApiError::invalid(
            vec![json!(root), json!(inner.column())],
            "json_invalid",
            format!("JSON decode error: {inner}"),
        )
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().clone();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return json_invalid(&inner);
        }
        // A type error can come before a syntax error later on (trailing data, a broken end);
        // the JSON is decoded first, as FastAPI does, so the syntax error is the one reported.
        let mut whole = serde_json::Deserializer::from_slice(bytes);
        if let Err(syntax) =
            serde::de::IgnoredAny::deserialize(&mut whole).and_then(|_| whole.end())
        {
            return json_invalid(&syntax);
        }
        let mut loc = vec![json!(root)];
        for seg in path.iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => loc.push(json!(index)),
                serde_path_to_error::Segment::Map { key } => loc.push(json!(key)),
                serde_path_to_error::Segment::Enum { variant } => loc.push(json!(variant)),
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        ApiError::Validation(vec![issue_from_serde(loc, &inner.to_string())])
    })?;
    de.end().map_err(|inner| json_invalid(&inner))?;
    Ok(value)
}

/// Deserialises an integer field as pydantic's lax mode does: a JSON integer, or a number with
/// no fractional part (`3.0`, `1e3`), within the field's range. Use with
/// `#[serde(deserialize_with = "lax_int")]`.
pub fn lax_int<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    use serde::de::{Error, Unexpected, Visitor};
    struct Int<T>(std::marker::PhantomData<T>);
    impl<T: TryFrom<i64> + TryFrom<u64>> Visitor<'_> for Int<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
            // ±2^63 are exact as f64; anything at or past 2^63 is out of every field's range.
            const I64_RANGE: std::ops::Range<f64> =
                -9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0;
            if v.fract() == 0.0 && I64_RANGE.contains(&v) {
                return self.visit_i64(v as i64);
            }
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
    d.deserialize_any(Int(std::marker::PhantomData))
}

/// Turns a serde message into pydantic's kind and wording.
fn issue_from_serde(mut loc: Vec<Value>, message: &str) -> ValidationIssue {
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    let quoted = |m: &str| m.split('`').nth(1).map(str::to_string);
    if let Some(rest) = message.strip_prefix("missing field ") {
        if let Some(field) = quoted(rest) {
            loc.push(json!(field));
        }
        return ValidationIssue::new(loc, "missing", "Field required");
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // serde_path_to_error already put the unknown key at the end of the path.
        if let Some(field) = quoted(rest).filter(|f| loc.last() != Some(&json!(f))) {
            loc.push(json!(field));
        }
        return ValidationIssue::new(loc, "extra_forbidden", "Extra inputs are not permitted");
    }
    if message.starts_with("unknown variant ") {
        let expected = message
            .split("expected ")
            .nth(1)
            .unwrap_or("")
            .replace("one of ", "")
            .replace('`', "'");
        return ValidationIssue::new(loc, "enum", format!("Input should be {expected}"));
    }
    if message.contains("UUID parsing failed") || message.contains("invalid character") {
        return ValidationIssue::new(
            loc,
            "uuid_parsing",
            format!("Input should be a valid UUID, {message}"),
        );
    }
    if let Some(expected) = message.split("expected ").nth(1) {
        let (kind, msg) = if expected.contains("UUID") || expected.contains("uuid") {
            (
                "uuid_type",
                "UUID input should be a string, bytes or UUID object",
            )
        } else if expected.contains("string") {
            ("string_type", "Input should be a valid string")
        } else if expected.contains("bool") {
            ("bool_type", "Input should be a valid boolean")
        } else if expected.contains("integer")
            || expected.contains("i64")
            || expected.contains("i32")
        {
            ("int_type", "Input should be a valid integer")
        } else if expected.contains("sequence") {
            ("list_type", "Input should be a valid list")
        } else if expected.contains("struct") || expected.contains("map") {
            ("dict_type", "Input should be a valid dictionary")
        } else {
            ("value_error", message.as_str())
        };
        return ValidationIssue::new(loc, kind, msg);
    }
    ValidationIssue::new(loc, "value_error", message)
}

/// Parses a path segment as a UUID, or a 422 at `["path", name]`.
pub fn path_uuid(name: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|e| {
        ApiError::invalid(
            vec![json!("path"), json!(name)],
            "uuid_parsing",
            format!("Input should be a valid UUID, {e}"),
        )
    })
}

/// Parses a path segment as an integer id, or a 422 at `["path", name]`.
pub fn path_int(name: &str, raw: &str) -> Result<i32, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::invalid(
            vec![json!("path"), json!(name)],
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
        )
    })
}

/// The query string's `key=value` pairs, in order (repeated keys kept).
pub fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string()).unwrap_or_default()
}

/// An integer query parameter with inclusive bounds, or its default when absent.
pub fn query_int(
    pairs: &[(String, String)],
    name: &str,
    default: Option<i64>,
    min: Option<i64>,
    max: Option<i64>,
) -> Result<Option<i64>, ApiError> {
    let loc = || vec![json!("query"), json!(name)];
    let Some((_, raw)) = pairs.iter().rev().find(|(k, _)| k == name) else {
        return Ok(default);
    };
    let value: i64 = raw.trim().parse().map_err(|_| {
        ApiError::invalid(
            loc(),
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
        )
    })?;
    if let Some(min) = min {
        if value < min {
            return Err(ApiError::invalid(
                loc(),
                "greater_than_equal",
                format!("Input should be greater than or equal to {min}"),
            ));
        }
    }
    if let Some(max) = max {
        if value > max {
            return Err(ApiError::invalid(
                loc(),
                "less_than_equal",
                format!("Input should be less than or equal to {max}"),
            ));
        }
    }
    Ok(Some(value))
}

/// `skip` (≥ 0) and `limit` (1..=100) as the legacy API validated them.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Rows to skip.
    pub skip: i64,
    /// Rows to return.
    pub limit: i64,
}

impl Page {
    /// Reads `skip`/`limit` from the query with `default_limit`, collecting both errors.
    pub fn from_query(pairs: &[(String, String)], default_limit: i64) -> Result<Page, ApiError> {
        let skip = query_int(pairs, "skip", Some(0), Some(0), None);
        let limit = query_int(pairs, "limit", Some(default_limit), Some(1), Some(100));
        match (skip, limit) {
            (Ok(s), Ok(l)) => Ok(Page {
                skip: s.unwrap_or(0),
                limit: l.unwrap_or(default_limit),
            }),
            (Err(ApiError::Validation(mut a)), Err(ApiError::Validation(b))) => {
                a.extend(b);
                Err(ApiError::Validation(a))
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }
}

/// Which control characters a stored string may hold (docs/INPUT-RULES.md). Control
/// characters here are C0 (U+0000–U+001F) and DEL (U+007F): Postgres cannot store U+0000 at
/// all, and the others only confuse terminals, logs and other clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// A single-line value (titles, names, tags, file names, content types): no control
    /// character at all.
    Line,
    /// Free text (message content, descriptions): tab, line feed and carriage return only.
    Free,
}

impl Text {
    /// True when `c` may not appear in this kind of text.
    pub fn forbids(self, c: char) -> bool {
        let control = c <= '\u{1f}' || c == '\u{7f}';
        control && !(self == Text::Free && matches!(c, '\t' | '\n' | '\r'))
    }
}

/// The JSON Schema `pattern` of [`Text::Line`] strings in the OpenAPI document (annotations
/// need the literal; a test checks they agree). `(?![\s\S])` is the end of the string in both
/// ECMA and Python regexes, where `$` would also match before a final line feed.
pub const LINE_PATTERN: &str = r"^[^\x00-\x1F\x7F]*(?![\s\S])";
/// The JSON Schema `pattern` of [`Text::Free`] strings.
pub const FREE_PATTERN: &str = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F]*(?![\s\S])";

/// The JSON Schema `pattern` of a UUID as the server parses it (simple, hyphenated, braced or
/// URN), for nullable UUID fields: generators may not apply `format: uuid` to a type list.
pub const UUID_PATTERN: &str = r"^(?:[0-9A-Fa-f]{32}|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}|[Uu][Rr][Nn]:[Uu][Uu][Ii][Dd]:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})(?![\s\S])";

/// The issue `type` of a forbidden control character.
pub const CONTROL_CHARACTER: &str = "string_control_character";

/// The issue at `loc` when `value` holds a control character that `kind` forbids.
pub fn control_character_issue(
    loc: Vec<Value>,
    value: &str,
    kind: Text,
) -> Option<ValidationIssue> {
    let (pos, c) = value.chars().enumerate().find(|(_, c)| kind.forbids(*c))?;
    let which = match kind {
        Text::Line => "control characters",
        Text::Free => "control characters other than tab, line feed and carriage return",
    };
    Some(ValidationIssue::new(
        loc,
        CONTROL_CHARACTER,
        format!(
            "String should not contain {which}; found U+{:04X} at position {pos}",
            u32::from(c)
        ),
    ))
}

/// Checks a string against its length limit and the control-character rule of its kind.
pub fn check_text(
    issues: &mut Vec<ValidationIssue>,
    loc: &[Value],
    value: Option<&str>,
    max: usize,
    kind: Text,
) {
    let Some(v) = value else { return };
    if v.chars().count() > max {
        issues.push(ValidationIssue::new(
            loc.to_vec(),
            "string_too_long",
            format!("String should have at most {max} characters"),
        ));
    }
    issues.extend(control_character_issue(loc.to_vec(), v, kind));
}

/// The issues of a body's string fields: `(field, value, max, kind)` each, reported at
/// `["body", field]` (too long, or a control character `kind` forbids).
pub fn body_text(fields: &[(&str, Option<&str>, usize, Text)]) -> Vec<ValidationIssue> {
    let mut issues = Vec::new();
    for (field, value, max, kind) in fields {
        check_text(
            &mut issues,
            &[json!("body"), json!(field)],
            *value,
            *max,
            *kind,
        );
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        content: String,
        chat_id: Uuid,
    }
    impl Validate for Body {}

    fn issues(body: &str) -> Vec<ValidationIssue> {
        match parse_json_body::<Body>(body.as_bytes()) {
            Err(ApiError::Validation(i)) => i,
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_field_is_located_in_the_body() {
        let i = issues(r#"{"chat_id":"7f9c0b5e-0d7c-4a43-9a8e-4b1f2a3c4d5e"}"#);
        assert_eq!(i[0].loc, vec![json!("body"), json!("content")]);
        assert_eq!(i[0].kind, "missing");
    }

    #[test]
    fn an_ill_typed_field_names_the_field() {
        let i = issues(r#"{"content": 5, "chat_id":"7f9c0b5e-0d7c-4a43-9a8e-4b1f2a3c4d5e"}"#);
        assert_eq!(i[0].loc, vec![json!("body"), json!("content")]);
        assert_eq!(i[0].kind, "string_type");
    }

    #[test]
    fn a_bad_uuid_and_an_extra_field_are_reported() {
        let i = issues(r#"{"content": "x", "chat_id":"nope"}"#);
        assert_eq!(i[0].kind, "uuid_parsing");
        assert_eq!(i[0].loc, vec![json!("body"), json!("chat_id")]);
        let i =
            issues(r#"{"content": "x", "chat_id":"7f9c0b5e-0d7c-4a43-9a8e-4b1f2a3c4d5e","x":1}"#);
        assert_eq!(i[0].kind, "extra_forbidden");
        assert_eq!(i[0].loc, vec![json!("body"), json!("x")]);
    }

    #[test]
    fn broken_json_is_json_invalid() {
        assert_eq!(issues("{\"content\": ")[0].kind, "json_invalid");
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        // serde would read `Body` from the array of its fields.
        let i = issues(r#"["x", "7f9c0b5e-0d7c-4a43-9a8e-4b1f2a3c4d5e"]"#);
        assert_eq!(i[0].kind, "model_attributes_type");
        assert_eq!(i[0].loc, vec![json!("body")]);
        for body in ["1", "\"x\"", "null", " [] "] {
            assert_eq!(issues(body)[0].kind, "model_attributes_type", "{body}");
        }
        assert_eq!(issues("[1,")[0].kind, "json_invalid");
        assert_eq!(issues("[] x")[0].kind, "json_invalid");
    }

    #[test]
    fn trailing_data_after_the_value_is_json_invalid() {
        let ok = r#"{"content":"x","chat_id":"7f9c0b5e-0d7c-4a43-9a8e-4b1f2a3c4d5e"}"#;
        assert!(parse_json_body::<Body>(format!("{ok} \r\n\t").as_bytes()).is_ok());
        // Decoded before it is read: a type error earlier in the body does not hide it.
        assert_eq!(issues(r#"{"content": 5} x"#)[0].kind, "json_invalid");
        for tail in [ok, " garbage", "]", "0", "\u{0}"] {
            let i = issues(&format!("{ok}{tail}"));
            assert_eq!(i[0].kind, "json_invalid", "{tail:?}");
            assert_eq!(i[0].loc[0], json!("body"));
        }
    }

    #[test]
    fn integers_may_be_integral_floats_within_range() {
        #[derive(serde::Deserialize, Debug)]
        struct Ints {
            #[serde(deserialize_with = "lax_int")]
            small: i32,
        }
        impl Validate for Ints {}
        let small =
            |raw: &str| parse_json_body::<Ints>(format!(r#"{{"small": {raw}}}"#).as_bytes());
        for (raw, want) in [
            ("3", 3),
            ("3.0", 3),
            ("-0.0", 0),
            ("1e3", 1000),
            ("-2147483648.0", i32::MIN),
        ] {
            assert_eq!(small(raw).map(|i| i.small).ok(), Some(want), "{raw}");
        }
        for raw in ["1.5", "3e9", "2147483648", "1e300", "\"3\"", "true", "null"] {
            match small(raw) {
                Err(ApiError::Validation(i)) => {
                    assert_eq!(i[0].kind, "int_type", "{raw}");
                    assert_eq!(i[0].loc, vec![json!("body"), json!("small")], "{raw}");
                }
                other => panic!("{raw}: {other:?}"),
            }
        }
    }

    #[test]
    fn control_characters_follow_the_kind_of_text() {
        for c in [
            '\u{0}', '\u{1}', '\u{8}', '\u{b}', '\u{c}', '\u{1b}', '\u{1f}', '\u{7f}',
        ] {
            assert!(Text::Free.forbids(c) && Text::Line.forbids(c), "{c:?}");
        }
        for c in ['\t', '\n', '\r'] {
            assert!(!Text::Free.forbids(c) && Text::Line.forbids(c), "{c:?}");
        }
        for c in [' ', 'a', 'é', '\u{80}', '\u{2028}', '😀'] {
            assert!(!Text::Free.forbids(c) && !Text::Line.forbids(c), "{c:?}");
        }
        let issue =
            control_character_issue(vec![json!("body"), json!("title")], "ab\u{0}", Text::Line);
        let issue = issue.expect("an issue");
        assert_eq!(issue.kind, CONTROL_CHARACTER);
        assert!(issue.msg.contains("U+0000 at position 2"), "{}", issue.msg);
        let issues = body_text(&[("title", Some(&"\u{0}".repeat(3)), 2, Text::Line)]);
        let kinds: Vec<_> = issues.iter().map(|i| i.kind.as_str()).collect();
        assert_eq!(kinds, ["string_too_long", CONTROL_CHARACTER]);
    }
}
