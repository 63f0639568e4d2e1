//! The project's one bitmap font table, `auto_gvpie/pixels/font8x8.txt`,
//! compiled into the binary and parsed at startup (no second copy of the glyphs).

use std::fmt;

pub const FIRST_CODE_POINT: u32 = 0x20;
pub const LAST_CODE_POINT: u32 = 0x7E;
pub const GLYPH_COUNT: usize = (LAST_CODE_POINT - FIRST_CODE_POINT + 1) as usize;
/// Code points outside the printable range are drawn as this glyph.
pub const REPLACEMENT: u32 = b'?' as u32;

const FONT_SOURCE: &str = include_str!("../../auto_gvpie/pixels/font8x8.txt");

#[derive(Debug, PartialEq, Eq)]
pub struct FontError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for FontError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "font8x8.txt line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for FontError {}

/// Eight row bytes per glyph, top to bottom; bit 7 is the leftmost column.
pub struct Font {
    pub glyphs: [[u8; 8]; GLYPH_COUNT],
}

impl Font {
    pub fn builtin() -> Result<Font, FontError> {
        Font::parse(FONT_SOURCE)
    }

    pub fn parse(source: &str) -> Result<Font, FontError> {
        let mut glyphs = [[0u8; 8]; GLYPH_COUNT];
        let mut expected = FIRST_CODE_POINT;
        for (index, raw) in source.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let err = |message: String| FontError { line, message };
            let tokens: Vec<&str> = content.split_whitespace().collect();
            if tokens.len() != 9 {
                return Err(err(format!("expected 9 tokens, found {}", tokens.len())));
            }
            let cp_text = tokens[0]
                .strip_prefix("0x")
                .or_else(|| tokens[0].strip_prefix("0X"))
                .ok_or_else(|| err(format!("code point {:?} lacks the 0x prefix", tokens[0])))?;
            let cp = u32::from_str_radix(cp_text, 16)
                .map_err(|_| err(format!("bad code point {:?}", tokens[0])))?;
            if cp != expected {
                return Err(err(format!(
                    "expected code point {expected:#04x}, found {cp:#04x}"
                )));
            }
            if cp > LAST_CODE_POINT {
                return Err(err(format!(
                    "code point {cp:#04x} is past {LAST_CODE_POINT:#04x}"
                )));
            }
            let glyph = &mut glyphs[(cp - FIRST_CODE_POINT) as usize];
            for (row, token) in tokens[1..].iter().enumerate() {
                if token.len() != 2 {
                    return Err(err(format!("row byte {token:?} must be two hex digits")));
                }
                glyph[row] = u8::from_str_radix(token, 16)
                    .map_err(|_| err(format!("bad row byte {token:?}")))?;
            }
            expected += 1;
        }
        if expected != LAST_CODE_POINT + 1 {
            return Err(FontError {
                line: source.lines().count(),
                message: format!("missing glyphs from {expected:#04x} to {LAST_CODE_POINT:#04x}"),
            });
        }
        Ok(Font { glyphs })
    }

    /// Glyph index (0-based from 0x20) the shader draws for a code point.
    pub fn glyph_index(code_point: u32) -> u32 {
        let cp = if (FIRST_CODE_POINT..=LAST_CODE_POINT).contains(&code_point) {
            code_point
        } else {
            REPLACEMENT
        };
        cp - FIRST_CODE_POINT
    }

    /// Two little-endian words per glyph: rows 0..3 in the first, rows 4..7 in the second,
    /// row r in byte r % 4 — the layout `shaders/pixel_program.wgsl` reads.
    pub fn packed_words(&self) -> Vec<u32> {
        self.glyphs
            .iter()
            .flat_map(|g| {
                [
                    u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
                    u32::from_le_bytes([g[4], g[5], g[6], g[7]]),
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_font_has_every_printable_glyph() {
        let font = Font::builtin().unwrap();
        let space = font.glyphs[0];
        assert_eq!(space, [0; 8]);
        let bang = font.glyphs[(b'!' as u32 - FIRST_CODE_POINT) as usize];
        assert_ne!(bang, [0; 8]);
    }

    #[test]
    fn unprintable_code_points_map_to_question_mark() {
        let q = (b'?' as u32) - FIRST_CODE_POINT;
        assert_eq!(Font::glyph_index(0x7F), q);
        assert_eq!(Font::glyph_index(0x1F), q);
        assert_eq!(Font::glyph_index(0x263A), q);
        assert_eq!(
            Font::glyph_index(b'A' as u32),
            (b'A' as u32) - FIRST_CODE_POINT
        );
    }

    #[test]
    fn packing_puts_row_zero_in_the_low_byte() {
        let mut text = String::new();
        for cp in FIRST_CODE_POINT..=LAST_CODE_POINT {
            text.push_str(&format!("0x{cp:02X} 01 02 03 04 05 06 07 08 # c\n"));
        }
        let font = Font::parse(&text).unwrap();
        let words = font.packed_words();
        assert_eq!(words.len(), 2 * GLYPH_COUNT);
        assert_eq!(words[0], 0x0403_0201);
        assert_eq!(words[1], 0x0807_0605);
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let err = Font::parse("# header\n0x20 00 00\n").err().unwrap();
        assert_eq!(err.line, 2);
        let err = Font::parse("0x21 00 00 00 00 00 00 00 00\n").err().unwrap();
        assert!(
            err.message.contains("expected code point 0x20"),
            "{}",
            err.message
        );
    }
}
