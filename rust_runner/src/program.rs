//! Pixel programs (docs/pixel_programs.md): decoding, validation with the same
//! rules and limits as `auto_gvpie/pixels/program.py`, and colour resolution.
//!
//! Which programs are valid is normative (the CPU and GPU must agree on it);
//! the wording of the messages follows the Python validator.

use std::fmt;

use crate::json::{self, Json, SyntaxError};

pub const MAX_CANVAS_SIDE: i64 = 4096;
pub const MAX_OPS: usize = 10_000;
pub const MAX_PALETTE: usize = 256;
pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_TEXT_CHARS: usize = 256;
pub const MAX_METADATA_BYTES: usize = 4096;
pub const COORD_LIMIT: i64 = 8192;
pub const MAX_EXTENT: i64 = 8192;
pub const MAX_SCALE: i64 = 16;
/// The document text in bytes, checked before decoding (docs/pixel_programs.md, "Limits and cost").
pub const MAX_PROGRAM_BYTES: usize = 4_000_000;
/// The render cost limit: weighted pixel writes, about 12.5 s of CPU rendering (measurements in
/// docs/pixel_programs.md and `auto_gvpie/pixels/program.py`, whose formula this one repeats).
pub const MAX_RENDER_COST: u64 = 100_000_000_000;
/// Per op name, in OP_NAMES order: (opaque, translucent) weight per touched pixel.
const COST_WEIGHTS: [(&str, u64, u64); 6] = [
    ("FILL", 1, 8),
    ("SET", 1, 8),
    ("RECT", 1, 8),
    ("LINE", 128, 256),
    ("CIRCLE", 64, 64),
    ("WRITE_TEXT", 64, 64),
];

const OP_NAMES: &str = "FILL, SET, RECT, LINE, CIRCLE, WRITE_TEXT";
const COLOUR_FORMS: &str =
    "must be a colour: a palette name, [r,g,b], [r,g,b,a], \"#rrggbb\" or \"#rrggbbaa\"";

/// What an op covers, in program coordinates (unclipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Fill,
    Set {
        x: i64,
        y: i64,
    },
    Rect {
        x: i64,
        y: i64,
        width: i64,
        height: i64,
        fill: bool,
    },
    Line {
        x1: i64,
        y1: i64,
        x2: i64,
        y2: i64,
    },
    Circle {
        cx: i64,
        cy: i64,
        r: i64,
        fill: bool,
    },
    /// `glyphs` are font indices (code point - 0x20), unprintables already mapped to '?'.
    Text {
        x: i64,
        y: i64,
        scale: i64,
        glyphs: Vec<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub shape: Shape,
    /// Resolved RGBA.
    pub color: [u8; 4],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub width: u32,
    pub height: u32,
    pub ops: Vec<Op>,
}

/// `<path>: <rule>`, the format the Python validator reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub path: String,
    pub rule: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.rule)
    }
}

impl std::error::Error for ValidationError {}

/// Rounds n/d to the nearest integer, halves toward +infinity (spec: LINE).
pub fn divround(n: i64, d: i64) -> i64 {
    let (n, d) = if d < 0 { (-n, -d) } else { (n, d) };
    (2 * n + d).div_euclid(2 * d)
}

/// Why a program could not be loaded: not JSON at all, or JSON that breaks a rule.
#[derive(Debug)]
pub enum LoadError {
    Syntax(SyntaxError),
    Invalid(ValidationError),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Syntax(e) => write!(f, "$: {e}"),
            LoadError::Invalid(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {}

/// `$: the program is N bytes; at most 4,000,000`, for text (or a file) over the size limit.
pub fn size_error(size: u64) -> ValidationError {
    ValidationError {
        path: "$".into(),
        rule: format!(
            "the program is {} bytes; at most {}",
            thousands(size),
            thousands(MAX_PROGRAM_BYTES as u64)
        ),
    }
}

pub fn parse_program(text: &str) -> Result<Program, LoadError> {
    if text.len() > MAX_PROGRAM_BYTES {
        return Err(LoadError::Invalid(size_error(text.len() as u64)));
    }
    let doc = json::parse(text).map_err(LoadError::Syntax)?;
    validate(&doc).map_err(LoadError::Invalid)
}

/// 1234567 -> "1,234,567", as Python's `f"{n:,}"`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How many of the integers low..high-1 lie in 0..size-1.
fn span(low: i64, high: i64, size: i64) -> u64 {
    (high.min(size) - low.max(0)).max(0) as u64
}

/// The canvas pixels the CPU renderer touches for `shape`, after clipping, as the cost counts
/// them (`op_pixels` in program.py): a CIRCLE or WRITE_TEXT its clipped bounding box, a LINE its
/// clipped major-axis length.
pub fn op_pixels(shape: &Shape, width: i64, height: i64) -> u64 {
    match shape {
        Shape::Fill => (width * height) as u64,
        Shape::Set { x, y } => span(*x, x + 1, width) * span(*y, y + 1, height),
        Shape::Rect {
            x,
            y,
            width: w,
            height: h,
            fill,
        } => {
            let across = span(*x, x + w, width);
            if *fill || *w <= 2 || *h <= 2 {
                return across * span(*y, y + h, height);
            }
            let (bottom, right) = (y + h - 1, x + w - 1);
            let inner = span(y + 1, bottom, height);
            across * (span(*y, y + 1, height) + span(bottom, bottom + 1, height))
                + inner * (span(*x, x + 1, width) + span(right, right + 1, width))
        }
        Shape::Line { x1, y1, x2, y2 } => {
            let (dx, dy) = (x2 - x1, y2 - y1);
            if dx == 0 && dy == 0 {
                span(*x1, x1 + 1, width) * span(*y1, y1 + 1, height)
            } else if dx.abs() >= dy.abs() {
                span(*x1.min(x2), x1.max(x2) + 1, width)
            } else {
                span(*y1.min(y2), y1.max(y2) + 1, height)
            }
        }
        Shape::Circle { cx, cy, r, .. } => {
            span(cx - r, cx + r + 1, width) * span(cy - r, cy + r + 1, height)
        }
        Shape::Text {
            x,
            y,
            scale,
            glyphs,
        } => {
            let advance = 8 * scale;
            span(*x, x + glyphs.len() as i64 * advance, width) * span(*y, y + advance, height)
        }
    }
}

fn op_name(shape: &Shape) -> usize {
    match shape {
        Shape::Fill => 0,
        Shape::Set { .. } => 1,
        Shape::Rect { .. } => 2,
        Shape::Line { .. } => 3,
        Shape::Circle { .. } => 4,
        Shape::Text { .. } => 5,
    }
}

/// Per op name (COST_WEIGHTS order) and translucency: (number of ops, cost). Ops the renderers
/// skip cost nothing: alpha 0, and everything before the last opaque FILL.
fn cost_parts(program: &Program) -> [[(u64, u64); 2]; 6] {
    let start = program
        .ops
        .iter()
        .rposition(|op| op.shape == Shape::Fill && op.color[3] == 255)
        .unwrap_or(0);
    let (w, h) = (program.width as i64, program.height as i64);
    let mut parts = [[(0u64, 0u64); 2]; 6];
    for op in &program.ops[start..] {
        let alpha = op.color[3];
        if alpha == 0 {
            continue;
        }
        let kind = op_name(&op.shape);
        let translucent = usize::from(alpha < 255);
        let (_, opaque_weight, translucent_weight) = COST_WEIGHTS[kind];
        let weight = if translucent == 1 {
            translucent_weight
        } else {
            opaque_weight
        };
        let part = &mut parts[kind][translucent];
        part.0 += 1;
        part.1 += op_pixels(&op.shape, w, h) * weight;
    }
    parts
}

/// The program's render cost (weighted pixel writes); valid programs are at most MAX_RENDER_COST.
pub fn render_cost(program: &Program) -> u64 {
    cost_parts(program).iter().flatten().map(|p| p.1).sum()
}

fn check_cost(program: &Program) -> Checked<()> {
    let parts = cost_parts(program);
    let total: u64 = parts.iter().flatten().map(|p| p.1).sum();
    if total <= MAX_RENDER_COST {
        return Ok(());
    }
    // The largest share; among equals the first in OP_NAMES order, opaque before translucent.
    let mut most = (0, 0, (0u64, 0u64));
    for (kind, pair) in parts.iter().enumerate() {
        for (translucent, part) in pair.iter().enumerate() {
            if part.1 > most.2 .1 {
                most = (kind, translucent, *part);
            }
        }
    }
    let (kind, translucent, (count, cost)) = most;
    fail(
        "ops",
        format!(
            "render cost {} exceeds the limit of {} (weighted pixel writes; most of it: {} {}{} ops, {})",
            thousands(total),
            thousands(MAX_RENDER_COST),
            thousands(count),
            if translucent == 1 { "translucent " } else { "" },
            COST_WEIGHTS[kind].0,
            thousands(cost)
        ),
    )
}

type Checked<T> = Result<T, ValidationError>;

fn fail<T>(path: &str, rule: impl Into<String>) -> Checked<T> {
    Err(ValidationError {
        path: path.to_owned(),
        rule: rule.into(),
    })
}

fn join(path: &str, key: &str) -> String {
    if path == "$" {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// An object's fields, checked for duplicates and for keys outside `allowed`.
struct Fields<'a> {
    path: String,
    entries: &'a [(String, Json)],
}

impl<'a> Fields<'a> {
    fn new(value: &'a Json, path: &str, allowed: &[&str]) -> Checked<Fields<'a>> {
        let Json::Object(entries) = value else {
            return fail(path, "must be an object");
        };
        reject_duplicates(entries, path)?;
        if let Some((key, _)) = entries.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return fail(&join(path, key), "unknown field");
        }
        Ok(Fields {
            path: path.to_owned(),
            entries,
        })
    }

    fn get(&self, key: &str) -> Option<&'a Json> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn require(&self, key: &str) -> Checked<&'a Json> {
        self.get(key)
            .map_or_else(|| fail(&self.path(key), "required"), Ok)
    }

    fn int(&self, key: &str, lo: i64, hi: i64) -> Checked<i64> {
        integer(self.require(key)?, &self.path(key), lo, hi)
    }

    fn int_or(&self, key: &str, default: i64, lo: i64, hi: i64) -> Checked<i64> {
        self.get(key)
            .map_or(Ok(default), |v| integer(v, &self.path(key), lo, hi))
    }

    fn bool_or(&self, key: &str, default: bool) -> Checked<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Json::Bool(b)) => Ok(*b),
            Some(_) => fail(&self.path(key), "must be a boolean"),
        }
    }

    fn string(&self, key: &str, max_chars: usize) -> Checked<&'a str> {
        string(self.require(key)?, &self.path(key), max_chars)
    }
}

fn reject_duplicates(entries: &[(String, Json)], path: &str) -> Checked<()> {
    for (i, (key, _)) in entries.iter().enumerate() {
        if entries[..i].iter().any(|(k, _)| k == key) {
            return fail(&join(path, key), "duplicate key");
        }
    }
    Ok(())
}

fn integer(value: &Json, path: &str, lo: i64, hi: i64) -> Checked<i64> {
    let v = match value {
        Json::Int(v) => *v,
        Json::BigInt(text) if text.starts_with('-') => i128::MIN,
        Json::BigInt(_) => i128::MAX,
        _ => return fail(path, "must be an integer"),
    };
    if v < lo as i128 {
        return fail(
            path,
            if lo == 1 {
                "must be > 0".to_owned()
            } else {
                format!("at least {lo}")
            },
        );
    }
    if v > hi as i128 {
        return fail(path, format!("at most {hi}"));
    }
    Ok(v as i64)
}

fn string<'a>(value: &'a Json, path: &str, max_chars: usize) -> Checked<&'a str> {
    let (Json::Str(s) | Json::UnpairedStr(s)) = value else {
        return fail(path, "must be a string");
    };
    if s.chars().count() > max_chars {
        return fail(path, format!("at most {max_chars} characters"));
    }
    if matches!(value, Json::UnpairedStr(_)) {
        return fail(path, "must not contain unpaired surrogates");
    }
    Ok(s)
}

fn coord(f: &Fields, key: &str) -> Checked<i64> {
    f.int(key, -COORD_LIMIT, COORD_LIMIT)
}

fn validate(doc: &Json) -> Checked<Program> {
    let top = Fields::new(
        doc,
        "$",
        &[
            "kind", "version", "name", "canvas", "palette", "ops", "metadata",
        ],
    )?;
    if !matches!(top.require("kind")?, Json::Str(s) if s == "pixel_program") {
        return fail("kind", "must be \"pixel_program\"");
    }
    if top.require("version")? != &Json::Int(1) {
        return fail("version", "must be 1");
    }
    if top.get("name").is_some() {
        top.string("name", MAX_NAME_CHARS)?;
    }
    let canvas = Fields::new(top.require("canvas")?, "canvas", &["width", "height"])?;
    let width = canvas.int("width", 1, MAX_CANVAS_SIDE)? as u32;
    let height = canvas.int("height", 1, MAX_CANVAS_SIDE)? as u32;
    let palette = match top.get("palette") {
        None => Vec::new(),
        Some(value) => palette(value)?,
    };
    let Json::Array(items) = top.require("ops")? else {
        return fail("ops", "must be an array");
    };
    if items.len() > MAX_OPS {
        return fail("ops", format!("at most {MAX_OPS} items"));
    }
    let ops = items
        .iter()
        .enumerate()
        .map(|(i, item)| op(item, &format!("ops[{i}]"), &palette))
        .collect::<Checked<Vec<Op>>>()?;
    if let Some(meta) = top.get("metadata") {
        if !matches!(meta, Json::Object(_)) {
            return fail("metadata", "must be an object");
        }
        check_metadata_keys(meta, "metadata")?;
        let mut compact = String::new();
        write_compact(meta, &mut compact).or_else(|rule| fail("metadata", rule))?;
        if compact.len() > MAX_METADATA_BYTES {
            return fail(
                "metadata",
                format!("at most {MAX_METADATA_BYTES} bytes when serialised"),
            );
        }
    }
    let program = Program { width, height, ops };
    check_cost(&program)?;
    Ok(program)
}

fn palette(value: &Json) -> Checked<Vec<(String, [u8; 4])>> {
    let Json::Object(entries) = value else {
        return fail("palette", "must be an object");
    };
    reject_duplicates(entries, "palette")?;
    if entries.len() > MAX_PALETTE {
        return fail("palette", format!("at most {MAX_PALETTE} entries"));
    }
    entries
        .iter()
        .map(|(name, value)| {
            if !is_palette_name(name) {
                return fail(
                    "palette",
                    format!(
                        "invalid palette name {} (must match [A-Za-z_][A-Za-z0-9_]{{0,31}})",
                        quoted(name)
                    ),
                );
            }
            Ok((name.clone(), colour(value, &join("palette", name), None)?))
        })
        .collect()
}

fn is_palette_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 32
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// Resolves a colour; `palette` None means names are not allowed (palette entries).
fn colour(value: &Json, path: &str, palette: Option<&[(String, [u8; 4])]>) -> Checked<[u8; 4]> {
    match value {
        Json::Str(s) => {
            if let Some(rgba) = s.strip_prefix('#').and_then(hex_colour) {
                return Ok(rgba);
            }
            if !is_palette_name(s) {
                return fail(path, COLOUR_FORMS);
            }
            let Some(palette) = palette else {
                return fail(
                    path,
                    "must not be a palette name (palette entries cannot refer to each other)",
                );
            };
            palette
                .iter()
                .find(|(n, _)| n == s)
                .map(|(_, c)| *c)
                .map_or_else(
                    || fail(path, format!("unknown palette name {}", quoted(s))),
                    Ok,
                )
        }
        Json::Array(items) => {
            if items.len() != 3 && items.len() != 4 {
                return fail(path, "must have 3 or 4 items");
            }
            let mut rgba = [255u8; 4];
            for (i, item) in items.iter().enumerate() {
                rgba[i] = integer(item, &format!("{path}[{i}]"), 0, 255)? as u8;
            }
            Ok(rgba)
        }
        _ => fail(path, COLOUR_FORMS),
    }
}

fn hex_colour(digits: &str) -> Option<[u8; 4]> {
    if !(digits.len() == 6 || digits.len() == 8) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).ok();
    let alpha = if digits.len() == 8 { byte(3)? } else { 255 };
    Some([byte(0)?, byte(1)?, byte(2)?, alpha])
}

fn op(value: &Json, path: &str, palette: &[(String, [u8; 4])]) -> Checked<Op> {
    let Json::Object(entries) = value else {
        return fail(path, "must be an object");
    };
    let name = match entries.iter().find(|(k, _)| k == "op") {
        None => return fail(&join(path, "op"), "required"),
        Some((_, Json::Str(s) | Json::UnpairedStr(s))) => s.as_str(),
        Some(_) => return fail(&join(path, "op"), "must be a string"),
    };
    let allowed: &[&str] = match name {
        "FILL" => &["op", "color"],
        "SET" => &["op", "color", "x", "y"],
        "RECT" => &["op", "color", "x", "y", "width", "height", "fill"],
        "LINE" => &["op", "color", "x1", "y1", "x2", "y2"],
        "CIRCLE" => &["op", "color", "cx", "cy", "r", "fill"],
        "WRITE_TEXT" => &["op", "color", "x", "y", "text", "scale"],
        // An unpaired surrogate was read as U+FFFD, so such a name lands here too.
        other => {
            reject_duplicates(entries, path)?;
            return fail(
                &join(path, "op"),
                format!("unknown op {} (expected one of {OP_NAMES})", quoted(other)),
            );
        }
    };
    let f = Fields::new(value, path, allowed)?;
    let shape = match name {
        "FILL" => Shape::Fill,
        "SET" => Shape::Set {
            x: coord(&f, "x")?,
            y: coord(&f, "y")?,
        },
        "RECT" => Shape::Rect {
            x: coord(&f, "x")?,
            y: coord(&f, "y")?,
            width: f.int("width", 1, MAX_EXTENT)?,
            height: f.int("height", 1, MAX_EXTENT)?,
            fill: f.bool_or("fill", true)?,
        },
        "LINE" => Shape::Line {
            x1: coord(&f, "x1")?,
            y1: coord(&f, "y1")?,
            x2: coord(&f, "x2")?,
            y2: coord(&f, "y2")?,
        },
        "CIRCLE" => Shape::Circle {
            cx: coord(&f, "cx")?,
            cy: coord(&f, "cy")?,
            r: f.int("r", 0, MAX_EXTENT)?,
            fill: f.bool_or("fill", true)?,
        },
        _ => Shape::Text {
            x: coord(&f, "x")?,
            y: coord(&f, "y")?,
            glyphs: f
                .string("text", MAX_TEXT_CHARS)?
                .chars()
                .map(|c| crate::font::Font::glyph_index(c as u32))
                .collect(),
            scale: f.int_or("scale", 1, 1, MAX_SCALE)?,
        },
    };
    let color = colour(f.require("color")?, &f.path("color"), Some(palette))?;
    Ok(Op { shape, color })
}

/// Duplicate keys are invalid in every object, metadata included.
fn check_metadata_keys(value: &Json, path: &str) -> Checked<()> {
    match value {
        Json::Object(entries) => {
            reject_duplicates(entries, path)?;
            entries
                .iter()
                .try_for_each(|(k, v)| check_metadata_keys(v, &join(path, k)))
        }
        Json::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_metadata_keys(v, &format!("{path}[{i}]"))),
        _ => Ok(()),
    }
}

/// The compact serialisation the 4096-byte metadata limit is measured on:
/// Python's `json.dumps(m, separators=(",", ":"), ensure_ascii=False,
/// allow_nan=False)`; Err(rule) where that raises.
fn write_compact(value: &Json, out: &mut String) -> Result<(), &'static str> {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Int(i) => out.push_str(&i.to_string()),
        Json::BigInt(text) => out.push_str(text),
        Json::Float(x) if !x.is_finite() => return Err("must contain only JSON values"),
        Json::Float(x) => out.push_str(&python_float_repr(*x)),
        Json::Str(s) => out.push_str(&quoted(s)),
        Json::UnpairedStr(_) => return Err("must not contain unpaired surrogates"),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_compact(item, out)?;
            }
            out.push(']');
        }
        Json::Object(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&quoted(k));
                out.push(':');
                write_compact(v, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Python's `repr(float)`: shortest round-trip digits, positional notation for
/// decimal exponents -4..15, otherwise `d.ddde+XX`.
fn python_float_repr(x: f64) -> String {
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let fixed = format!("{x}");
        if fixed.contains('.') {
            fixed
        } else {
            fixed + ".0"
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
pub use reference::paint_pixel;

/// A straight per-pixel transcription of the spec, used to check that binning
/// never changes what a pixel receives.
#[cfg(test)]
mod reference {
    use super::*;
    use crate::font::Font;
    use std::sync::OnceLock;

    fn inside(dx: i64, dy: i64, k: i64) -> bool {
        k >= 0 && dx * dx + dy * dy <= k * k + k
    }

    fn covers(shape: &Shape, px: i64, py: i64) -> bool {
        match shape {
            Shape::Fill => true,
            Shape::Set { x, y } => px == *x && py == *y,
            Shape::Rect {
                x,
                y,
                width,
                height,
                fill,
            } => {
                let (x2, y2) = (x + width - 1, y + height - 1);
                let inside = *x <= px && px <= x2 && *y <= py && py <= y2;
                inside && (*fill || px == *x || px == x2 || py == *y || py == y2)
            }
            Shape::Line { x1, y1, x2, y2 } => {
                let (dx, dy) = (x2 - x1, y2 - y1);
                if dx == 0 && dy == 0 {
                    px == *x1 && py == *y1
                } else if dx.abs() >= dy.abs() {
                    *x1.min(x2) <= px
                        && px <= *x1.max(x2)
                        && py == y1 + divround((px - x1) * dy, dx)
                } else {
                    *y1.min(y2) <= py
                        && py <= *y1.max(y2)
                        && px == x1 + divround((py - y1) * dx, dy)
                }
            }
            Shape::Circle { cx, cy, r, fill } => {
                let (dx, dy) = (px - cx, py - cy);
                inside(dx, dy, *r) && (*fill || !inside(dx, dy, r - 1))
            }
            Shape::Text {
                x,
                y,
                scale,
                glyphs,
            } => {
                static FONT: OnceLock<Font> = OnceLock::new();
                let font = FONT.get_or_init(|| Font::builtin().expect("font"));
                let cell = 8 * scale;
                if px < *x || py < *y || py >= y + cell {
                    return false;
                }
                let i = ((px - x) / cell) as usize;
                let Some(&g) = glyphs.get(i) else {
                    return false;
                };
                let col = (px - x - i as i64 * cell) / scale;
                let row = (py - y) / scale;
                font.glyphs[g as usize][row as usize] & (0x80 >> col) != 0
            }
        }
    }

    pub fn paint_pixel(op: &Op, px: i64, py: i64, dst: [u8; 3]) -> [u8; 3] {
        if !covers(&op.shape, px, py) {
            return dst;
        }
        let a = op.color[3] as u32;
        std::array::from_fn(|c| {
            ((op.color[c] as u32 * a + dst[c] as u32 * (255 - a) + 127) / 255) as u8
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse_program(text) {
            Err(e) => e.to_string(),
            Ok(p) => panic!("accepted: {p:?}"),
        }
    }

    fn with_ops(ops: &str) -> String {
        format!(
            r##"{{"kind": "pixel_program", "version": 1, "canvas": {{"width": 8, "height": 4}},
                "palette": {{"fg": "#10203040", "bg": [1, 2, 3]}}, "ops": [{ops}]}}"##
        )
    }

    #[test]
    fn divround_rounds_halves_up() {
        assert_eq!(divround(1, 2), 1);
        assert_eq!(divround(-1, 2), 0);
        assert_eq!(divround(1, -2), 0);
        assert_eq!(divround(-3, 2), -1);
        assert_eq!(divround(4, 5), 1);
        assert_eq!(divround(-4, 5), -1);
        assert_eq!(divround(0, -7), 0);
    }

    #[test]
    fn resolves_every_colour_form_and_defaults() {
        let p = parse_program(&with_ops(
            r##"{"op": "FILL", "color": "bg"},
                {"op": "RECT", "x": -1, "y": 2, "width": 3, "height": 4, "color": "fg"},
                {"op": "CIRCLE", "cx": 0, "cy": 0, "r": 0, "color": [9, 8, 7, 6], "fill": false},
                {"op": "WRITE_TEXT", "x": 0, "y": 0, "text": "A\u00e9", "color": "#aaBBcc"},
                {"op": "LINE", "x1": 1, "y1": 2, "x2": 3, "y2": -4, "color": "#00000000"},
                {"op": "SET", "x": 8192, "y": -8192, "color": [1, 1, 1]}"##,
        ))
        .unwrap();
        assert_eq!((p.width, p.height), (8, 4));
        let colours: Vec<[u8; 4]> = p.ops.iter().map(|o| o.color).collect();
        assert_eq!(
            colours,
            vec![
                [1, 2, 3, 255],
                [16, 32, 48, 64],
                [9, 8, 7, 6],
                [170, 187, 204, 255],
                [0; 4],
                [1, 1, 1, 255]
            ]
        );
        assert_eq!(
            p.ops[1].shape,
            Shape::Rect {
                x: -1,
                y: 2,
                width: 3,
                height: 4,
                fill: true
            }
        );
        assert_eq!(
            p.ops[3].shape,
            Shape::Text {
                x: 0,
                y: 0,
                scale: 1,
                glyphs: vec![33, 31]
            }
        );
    }

    #[test]
    fn reports_the_json_path_of_the_first_problem() {
        let cases = [
            (
                r#"{"op": "RECT", "x": 0, "y": 0, "width": 0, "height": 1, "color": "bg"}"#,
                "ops[0].width: must be > 0",
            ),
            (
                r#"{"op": "RECT", "x": 0, "y": 0, "width": 1, "height": 8193, "color": "bg"}"#,
                "ops[0].height: at most 8192",
            ),
            (
                r#"{"op": "SET", "x": 1.0, "y": 0, "color": "bg"}"#,
                "ops[0].x: must be an integer",
            ),
            (
                r#"{"op": "SET", "x": true, "y": 0, "color": "bg"}"#,
                "ops[0].x: must be an integer",
            ),
            (
                r#"{"op": "SET", "x": -8193, "y": 0, "color": "bg"}"#,
                "ops[0].x: at least -8192",
            ),
            (
                r#"{"op": "SET", "x": 0, "color": "bg"}"#,
                "ops[0].y: required",
            ),
            (
                r#"{"op": "FILL", "color": [1, 256, 0]}"#,
                "ops[0].color[1]: at most 255",
            ),
            (
                r#"{"op": "FILL", "color": [1, 2]}"#,
                "ops[0].color: must have 3 or 4 items",
            ),
            (
                r#"{"op": "FILL", "color": "sky"}"#,
                r#"ops[0].color: unknown palette name "sky""#,
            ),
            (
                r##"{"op": "FILL", "color": "#fff"}"##,
                &format!("ops[0].color: {COLOUR_FORMS}"),
            ),
            (
                r#"{"op": "FILL", "color": "bg", "radius": 1}"#,
                "ops[0].radius: unknown field",
            ),
            (
                r#"{"op": "FILL", "color": "bg", "color": "fg"}"#,
                "ops[0].color: duplicate key",
            ),
            (
                r#"{"op": "CIRCLE", "cx": 0, "cy": 0, "r": 1, "fill": 1, "color": "bg"}"#,
                "ops[0].fill: must be a boolean",
            ),
            (
                r#"{"op": "WRITE_TEXT", "x": 0, "y": 0, "text": "a", "scale": 17, "color": "bg"}"#,
                "ops[0].scale: at most 16",
            ),
            (
                r#"{"op": "BLUR", "color": "bg"}"#,
                &format!("ops[0].op: unknown op \"BLUR\" (expected one of {OP_NAMES})"),
            ),
            ("[]", "ops[0]: must be an object"),
        ];
        for (op, expected) in cases {
            assert_eq!(err(&with_ops(op)), expected, "{op}");
        }
        let long_text = format!(
            r#"{{"op": "WRITE_TEXT", "x": 0, "y": 0, "text": "{}", "color": "bg"}}"#,
            "é".repeat(257)
        );
        assert_eq!(
            err(&with_ops(&long_text)),
            "ops[0].text: at most 256 characters"
        );
    }

    #[test]
    fn document_level_rules() {
        assert_eq!(err("[1]"), "$: must be an object");
        assert!(err("{").starts_with("$: invalid JSON"));
        assert_eq!(
            err(r#"{"version": 1, "canvas": {"width": 1, "height": 1}, "ops": []}"#),
            "kind: required"
        );
        assert_eq!(
            err(
                r#"{"kind": "pixel_program", "version": 2, "canvas": {"width": 1, "height": 1}, "ops": []}"#
            ),
            "version: must be 1"
        );
        assert_eq!(
            err(
                r#"{"kind": "pixel_program", "version": 1, "canvas": {"width": 4097, "height": 1}, "ops": []}"#
            ),
            "canvas.width: at most 4096"
        );
        assert_eq!(
            err(
                r#"{"kind": "pixel_program", "version": 1, "canvas": {"width": 1, "height": 1}, "ops": [], "extra": 0}"#
            ),
            "extra: unknown field"
        );
        assert_eq!(
            err(
                r#"{"kind": "pixel_program", "version": 1, "canvas": {"width": 1, "height": 1}, "ops": [], "palette": {"a": "b"}}"#
            ),
            "palette.a: must not be a palette name (palette entries cannot refer to each other)"
        );
        assert_eq!(
            err(
                r#"{"kind": "pixel_program", "version": 1, "canvas": {"width": 1, "height": 1}, "ops": [], "palette": {"a b": [1,2,3]}}"#
            ),
            r#"palette: invalid palette name "a b" (must match [A-Za-z_][A-Za-z0-9_]{0,31})"#
        );
        let meta_ok = format!(r#"{{"d": "{}"}}"#, "x".repeat(4096 - 8));
        let meta_big = format!(r#"{{"d": "{}"}}"#, "x".repeat(4096 - 7));
        let doc = |m: &str| {
            format!(
                r#"{{"kind": "pixel_program", "version": 1, "canvas": {{"width": 1, "height": 1}}, "ops": [], "metadata": {m}}}"#
            )
        };
        assert!(parse_program(&doc(&meta_ok)).is_ok());
        assert_eq!(
            err(&doc(&meta_big)),
            "metadata: at most 4096 bytes when serialised"
        );
        assert_eq!(
            err(&doc(r#"{"a": {"b": 1, "b": 2}}"#)),
            "metadata.a.b: duplicate key"
        );
        let too_many = format!(
            "{}{}",
            "{\"op\": \"FILL\", \"color\": \"bg\"},".repeat(MAX_OPS),
            "{\"op\": \"FILL\", \"color\": \"bg\"}"
        );
        assert_eq!(err(&with_ops(&too_many)), "ops: at most 10000 items");
    }

    fn canvas_with(width: u32, height: u32, op: &str, times: usize) -> String {
        format!(
            r#"{{"kind": "pixel_program", "version": 1, "canvas": {{"width": {width}, "height": {height}}}, "ops": [{}]}}"#,
            vec![op; times].join(",")
        )
    }

    #[test]
    fn thousands_separators_like_python() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(61_000_000), "61,000,000");
        assert_eq!(thousands(1_342_177_280_000), "1,342,177,280,000");
    }

    #[test]
    fn refuses_oversized_text_before_decoding() {
        let text = format!("{}{}", " ".repeat(MAX_PROGRAM_BYTES), "{}");
        assert_eq!(
            err(&text),
            format!(
                "$: the program is {} bytes; at most 4,000,000",
                thousands(text.len() as u64)
            )
        );
        let ok = canvas_with(1, 1, r#"{"op": "FILL", "color": [1, 2, 3]}"#, 1);
        let padded = format!("{ok}{}", " ".repeat(MAX_PROGRAM_BYTES - ok.len()));
        assert!(parse_program(&padded).is_ok());
    }

    #[test]
    fn render_cost_refuses_translucent_full_canvas_fills() {
        let fills = canvas_with(
            4096,
            4096,
            r#"{"op": "FILL", "color": [1, 2, 3, 4]}"#,
            10_000,
        );
        assert_eq!(
            err(&fills),
            "ops: render cost 1,342,177,280,000 exceeds the limit of 100,000,000,000 \
             (weighted pixel writes; most of it: 10,000 translucent FILL ops, 1,342,177,280,000)"
        );
        let circles = canvas_with(
            4096,
            4096,
            r#"{"op": "CIRCLE", "cx": 2048, "cy": 2048, "r": 4096, "color": [1, 2, 3, 4]}"#,
            10_000,
        );
        assert!(err(&circles).contains("10,000 translucent CIRCLE ops, 10,737,418,240,000"));
        // An opaque FILL at the end hides everything before it; alpha 0 costs nothing.
        let translucent = r#"{"op": "FILL", "color": [1, 2, 3, 4]}"#;
        let hidden = canvas_with(4096, 4096, translucent, 9_999)
            .replace("4]}]}", r#"4]}, {"op": "FILL", "color": [0, 0, 0]}]}"#);
        assert_eq!(render_cost(&parse_program(&hidden).unwrap()), 4096 * 4096);
        let clear = canvas_with(
            4096,
            4096,
            r#"{"op": "FILL", "color": [1, 2, 3, 0]}"#,
            10_000,
        );
        assert_eq!(render_cost(&parse_program(&clear).unwrap()), 0);
    }

    #[test]
    fn op_pixels_are_the_clipped_areas() {
        let rect = |x, y, width, height, fill| Shape::Rect {
            x,
            y,
            width,
            height,
            fill,
        };
        assert_eq!(op_pixels(&Shape::Fill, 7, 5), 35);
        assert_eq!(op_pixels(&Shape::Set { x: 6, y: 4 }, 7, 5), 1);
        assert_eq!(op_pixels(&Shape::Set { x: 7, y: 4 }, 7, 5), 0);
        assert_eq!(op_pixels(&rect(-2, -2, 4, 4, true), 7, 5), 4);
        assert_eq!(op_pixels(&rect(0, 0, 7, 5, false), 7, 5), 7 + 7 + 3 + 3);
        assert_eq!(op_pixels(&rect(-1, 1, 9, 2, false), 7, 5), 14);
        assert_eq!(op_pixels(&rect(3, -8192, 8192, 8192, false), 7, 5), 0);
        let line = |x1, y1, x2, y2| Shape::Line { x1, y1, x2, y2 };
        assert_eq!(op_pixels(&line(-8192, 3, 8192, 4), 7, 5), 7);
        assert_eq!(op_pixels(&line(2, -8192, 3, 8192), 7, 5), 5);
        assert_eq!(op_pixels(&line(9, 9, 9, 9), 7, 5), 0);
        let circle = Shape::Circle {
            cx: 0,
            cy: 0,
            r: 2,
            fill: false,
        };
        assert_eq!(op_pixels(&circle, 7, 5), 9);
        let text = Shape::Text {
            x: -4,
            y: 1,
            scale: 1,
            glyphs: vec![1, 2],
        };
        assert_eq!(op_pixels(&text, 7, 5), 7 * 4);
    }

    #[test]
    fn floats_serialise_like_python() {
        assert_eq!(python_float_repr(1.5), "1.5");
        assert_eq!(python_float_repr(3.0), "3.0");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(123456789012345.6), "123456789012345.6");
        assert_eq!(python_float_repr(0.0001), "0.0001");
        assert_eq!(python_float_repr(0.00001), "1e-05");
        assert_eq!(python_float_repr(-2.5e-300), "-2.5e-300");
    }
}
