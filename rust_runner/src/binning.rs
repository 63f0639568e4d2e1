//! Sorting ops into square screen tiles so that each pixel replays only the ops
//! that can touch its tile, in program order (cost ~ pixels x ops-per-tile, not
//! pixels x ops).
//!
//! Output is compressed rows: tile `t` owns `ops[offsets[t]..offsets[t + 1]]`.
//! Ops drawn before an opaque op that paints a whole tile are left out of that
//! tile: they cannot show through.

use crate::program::{divround, Op, Program, Shape};

/// Tile side the shader's 16x16 workgroups are built around.
pub const BASE_TILE: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub tile: u32,
    pub tiles_x: u32,
    pub tiles_y: u32,
    pub width: u32,
    pub height: u32,
}

impl Grid {
    pub fn new(width: u32, height: u32, tile: u32) -> Grid {
        Grid {
            tile,
            tiles_x: width.div_ceil(tile),
            tiles_y: height.div_ceil(tile),
            width,
            height,
        }
    }

    pub fn tile_count(&self) -> usize {
        self.tiles_x as usize * self.tiles_y as usize
    }

    /// Pixel rectangle of a tile, inclusive, clipped to the canvas.
    fn tile_rect(&self, tx: u32, ty: u32) -> PixelRect {
        let t = self.tile as i64;
        PixelRect {
            x0: tx as i64 * t,
            y0: ty as i64 * t,
            x1: ((tx as i64 + 1) * t - 1).min(self.width as i64 - 1),
            y1: ((ty as i64 + 1) * t - 1).min(self.height as i64 - 1),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Bins {
    pub grid: Grid,
    pub offsets: Vec<u32>,
    pub ops: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct PixelRect {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl PixelRect {
    /// Clip to the canvas; None when nothing is left.
    fn clip(self, grid: &Grid) -> Option<PixelRect> {
        let r = PixelRect {
            x0: self.x0.max(0),
            y0: self.y0.max(0),
            x1: self.x1.min(grid.width as i64 - 1),
            y1: self.y1.min(grid.height as i64 - 1),
        };
        (r.x0 <= r.x1 && r.y0 <= r.y1).then_some(r)
    }

    fn contains(&self, other: &PixelRect) -> bool {
        self.x0 <= other.x0 && other.x1 <= self.x1 && self.y0 <= other.y0 && other.y1 <= self.y1
    }
}

/// Bin with the base tile size, doubling it while the op lists would not fit
/// `max_entries` (a device's storage-binding limit); None if even one tile per
/// canvas does not fit.
pub fn bin_program(program: &Program, max_entries: usize) -> Option<Bins> {
    let mut tile = BASE_TILE;
    loop {
        let grid = Grid::new(program.width, program.height, tile);
        let starts = occlusion_starts(program, &grid);
        let counts = count_entries(program, &grid, &starts);
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total <= max_entries {
            return Some(fill_bins(program, grid, &starts, counts, total));
        }
        if grid.tiles_x == 1 && grid.tiles_y == 1 {
            return None;
        }
        tile *= 2;
    }
}

/// Per tile, the index of the last op that paints the whole tile opaquely.
fn occlusion_starts(program: &Program, grid: &Grid) -> Vec<u32> {
    let mut starts = vec![0u32; grid.tile_count()];
    for (i, op) in program.ops.iter().enumerate() {
        if op.color[3] != 255 {
            continue;
        }
        visit_tiles(op, grid, |t, rect| {
            if paints_whole_rect(op, &rect) {
                starts[t] = i as u32;
            }
        });
    }
    starts
}

fn count_entries(program: &Program, grid: &Grid, starts: &[u32]) -> Vec<u32> {
    let mut counts = vec![0u32; grid.tile_count()];
    for (i, op) in program.ops.iter().enumerate() {
        visit_tiles(op, grid, |t, _| {
            if i as u32 >= starts[t] {
                counts[t] += 1;
            }
        });
    }
    counts
}

fn fill_bins(
    program: &Program,
    grid: Grid,
    starts: &[u32],
    counts: Vec<u32>,
    total: usize,
) -> Bins {
    let mut offsets = Vec::with_capacity(counts.len() + 1);
    let mut running = 0u32;
    offsets.push(0);
    for c in &counts {
        running += c;
        offsets.push(running);
    }
    let mut cursor: Vec<u32> = offsets[..counts.len()].to_vec();
    let mut ops = vec![0u32; total];
    for (i, op) in program.ops.iter().enumerate() {
        visit_tiles(op, &grid, |t, _| {
            if i as u32 >= starts[t] {
                ops[cursor[t] as usize] = i as u32;
                cursor[t] += 1;
            }
        });
    }
    Bins { grid, offsets, ops }
}

/// True when the op sets every pixel of `rect` (a clipped tile).
fn paints_whole_rect(op: &Op, rect: &PixelRect) -> bool {
    match &op.shape {
        Shape::Fill => true,
        Shape::Rect {
            x,
            y,
            width,
            height,
            fill: true,
        } => PixelRect {
            x0: *x,
            y0: *y,
            x1: x + width - 1,
            y1: y + height - 1,
        }
        .contains(rect),
        // The disk is convex, so holding the four corners means holding the tile.
        Shape::Circle {
            cx,
            cy,
            r,
            fill: true,
        } => corners(rect)
            .iter()
            .all(|&(px, py)| within(px - cx, py - cy, *r)),
        _ => false,
    }
}

fn corners(r: &PixelRect) -> [(i64, i64); 4] {
    [(r.x0, r.y0), (r.x1, r.y0), (r.x0, r.y1), (r.x1, r.y1)]
}

/// The spec's inside_k for an offset from the centre.
fn within(dx: i64, dy: i64, k: i64) -> bool {
    k >= 0 && dx * dx + dy * dy <= k * k + k
}

/// Calls `f(tile_index, tile_rect)` for every tile where the op may change a pixel.
/// Tiles may be over-reported, never under-reported.
fn visit_tiles(op: &Op, grid: &Grid, mut f: impl FnMut(usize, PixelRect)) {
    // Fully transparent ops change nothing (a = 0 leaves every pixel as it was).
    if op.color[3] == 0 {
        return;
    }
    let Some(bbox) = bounding_box(op).clip(grid) else {
        return;
    };
    let tile = grid.tile as i64;
    match &op.shape {
        Shape::Line { x1, y1, x2, y2 } if x1 != x2 || y1 != y2 => {
            visit_line_tiles(grid, &bbox, (*x1, *y1, *x2, *y2), &mut f)
        }
        _ => {
            for ty in bbox.y0 / tile..=bbox.y1 / tile {
                for tx in bbox.x0 / tile..=bbox.x1 / tile {
                    let rect = grid.tile_rect(tx as u32, ty as u32);
                    if !skips_tile(op, &rect) {
                        f((ty as usize) * grid.tiles_x as usize + tx as usize, rect);
                    }
                }
            }
        }
    }
}

/// Outlines leave their interior untouched: tiles wholly inside it are skipped.
fn skips_tile(op: &Op, rect: &PixelRect) -> bool {
    match &op.shape {
        Shape::Rect {
            x,
            y,
            width,
            height,
            fill: false,
        } => PixelRect {
            x0: x + 1,
            y0: y + 1,
            x1: x + width - 2,
            y1: y + height - 2,
        }
        .contains(rect),
        Shape::Circle {
            cx,
            cy,
            r,
            fill: false,
        } => corners(rect)
            .iter()
            .all(|&(px, py)| within(px - cx, py - cy, r - 1)),
        _ => false,
    }
}

/// A line's pixels are monotone along its major axis, so per tile column (or
/// row) the touched minor range follows from the two ends of that stretch.
fn visit_line_tiles(
    grid: &Grid,
    bbox: &PixelRect,
    (x1, y1, x2, y2): (i64, i64, i64, i64),
    f: &mut impl FnMut(usize, PixelRect),
) {
    let (dx, dy) = (x2 - x1, y2 - y1);
    let tile = grid.tile as i64;
    let x_major = dx.abs() >= dy.abs();
    // (major start, minor start, major delta, minor delta, major range, minor range)
    let (a1, b1, da, db, (amin, amax), (bmin, bmax)) = if x_major {
        (x1, y1, dx, dy, (bbox.x0, bbox.x1), (bbox.y0, bbox.y1))
    } else {
        (y1, x1, dy, dx, (bbox.y0, bbox.y1), (bbox.x0, bbox.x1))
    };
    for band in amin / tile..=amax / tile {
        let lo = amin.max(band * tile);
        let hi = amax.min(band * tile + tile - 1);
        let m_lo = b1 + divround((lo - a1) * db, da);
        let m_hi = b1 + divround((hi - a1) * db, da);
        let (m0, m1) = (m_lo.min(m_hi).max(bmin), m_lo.max(m_hi).min(bmax));
        if m0 > m1 {
            continue;
        }
        for cross in m0 / tile..=m1 / tile {
            let (tx, ty) = if x_major {
                (band, cross)
            } else {
                (cross, band)
            };
            let rect = grid.tile_rect(tx as u32, ty as u32);
            f((ty as usize) * grid.tiles_x as usize + tx as usize, rect);
        }
    }
}

/// Inclusive pixel bounds of everything the op can paint (unclipped).
fn bounding_box(op: &Op) -> PixelRect {
    match &op.shape {
        Shape::Fill => PixelRect {
            x0: i64::MIN / 4,
            y0: i64::MIN / 4,
            x1: i64::MAX / 4,
            y1: i64::MAX / 4,
        },
        Shape::Set { x, y } => PixelRect {
            x0: *x,
            y0: *y,
            x1: *x,
            y1: *y,
        },
        Shape::Rect {
            x,
            y,
            width,
            height,
            ..
        } => PixelRect {
            x0: *x,
            y0: *y,
            x1: x + width - 1,
            y1: y + height - 1,
        },
        Shape::Line { x1, y1, x2, y2 } => PixelRect {
            x0: *x1.min(x2),
            y0: *y1.min(y2),
            x1: *x1.max(x2),
            y1: *y1.max(y2),
        },
        Shape::Circle { cx, cy, r, .. } => PixelRect {
            x0: cx - r,
            y0: cy - r,
            x1: cx + r,
            y1: cy + r,
        },
        Shape::Text {
            x,
            y,
            scale,
            glyphs,
        } => PixelRect {
            x0: *x,
            y0: *y,
            x1: x + glyphs.len() as i64 * 8 * scale - 1,
            y1: y + 8 * scale - 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::{paint_pixel, Program};

    fn program(width: u32, height: u32, ops: Vec<Op>) -> Program {
        Program { width, height, ops }
    }

    fn op(shape: Shape, color: [u8; 4]) -> Op {
        Op { shape, color }
    }

    /// Replays every op on every pixel, and only the binned ops, and compares.
    fn assert_binning_preserves_pixels(p: &Program, max_entries: usize) -> Bins {
        let bins = bin_program(p, max_entries).expect("fits");
        let g = bins.grid;
        for py in 0..p.height as i64 {
            for px in 0..p.width as i64 {
                let mut all = [0u8, 0, 0];
                for o in &p.ops {
                    all = paint_pixel(o, px, py, all);
                }
                let t = (py as u32 / g.tile * g.tiles_x + px as u32 / g.tile) as usize;
                let mut binned = [0u8, 0, 0];
                for &i in &bins.ops[bins.offsets[t] as usize..bins.offsets[t + 1] as usize] {
                    binned = paint_pixel(&p.ops[i as usize], px, py, binned);
                }
                assert_eq!(all, binned, "pixel ({px}, {py}) tile {t}");
            }
        }
        bins
    }

    fn sample_ops() -> Vec<Op> {
        let red = [255, 0, 0, 255];
        let glass = [0, 255, 0, 100];
        vec![
            op(Shape::Fill, [10, 20, 30, 255]),
            op(
                Shape::Rect {
                    x: -5,
                    y: 3,
                    width: 40,
                    height: 20,
                    fill: true,
                },
                glass,
            ),
            op(
                Shape::Rect {
                    x: 2,
                    y: 2,
                    width: 60,
                    height: 45,
                    fill: false,
                },
                red,
            ),
            op(
                Shape::Line {
                    x1: -10,
                    y1: 70,
                    x2: 80,
                    y2: -3,
                },
                red,
            ),
            op(
                Shape::Line {
                    x1: 5,
                    y1: 0,
                    x2: 9,
                    y2: 49,
                },
                glass,
            ),
            op(
                Shape::Line {
                    x1: 40,
                    y1: 40,
                    x2: 3,
                    y2: 44,
                },
                red,
            ),
            op(
                Shape::Circle {
                    cx: 30,
                    cy: 25,
                    r: 19,
                    fill: false,
                },
                red,
            ),
            op(
                Shape::Circle {
                    cx: 52,
                    cy: 8,
                    r: 30,
                    fill: true,
                },
                [1, 2, 3, 255],
            ),
            op(
                Shape::Circle {
                    cx: 10,
                    cy: 40,
                    r: 0,
                    fill: true,
                },
                red,
            ),
            op(Shape::Set { x: 63, y: 47 }, glass),
            op(
                Shape::Rect {
                    x: 0,
                    y: 0,
                    width: 64,
                    height: 48,
                    fill: true,
                },
                [200, 0, 0, 0],
            ),
            op(
                Shape::Text {
                    x: -3,
                    y: 30,
                    scale: 2,
                    glyphs: vec![33, 34, 31, 0, 94],
                },
                red,
            ),
        ]
    }

    #[test]
    fn binned_replay_matches_full_replay() {
        let p = program(64, 48, sample_ops());
        let bins = assert_binning_preserves_pixels(&p, usize::MAX);
        assert_eq!(bins.grid.tile, BASE_TILE);
    }

    #[test]
    fn odd_canvas_sizes_bin_correctly() {
        let p = program(37, 21, sample_ops());
        assert_binning_preserves_pixels(&p, usize::MAX);
    }

    #[test]
    fn opaque_cover_drops_earlier_ops() {
        let mut ops = sample_ops();
        ops.push(op(Shape::Fill, [9, 9, 9, 255]));
        ops.push(op(Shape::Set { x: 0, y: 0 }, [1, 1, 1, 255]));
        let p = program(64, 48, ops);
        let bins = assert_binning_preserves_pixels(&p, usize::MAX);
        let last_fill = (p.ops.len() - 2) as u32;
        assert_eq!(&bins.ops[..2], &[last_fill, last_fill + 1]);
        assert_eq!(bins.ops.len(), bins.grid.tile_count() + 1);
    }

    #[test]
    fn tiles_grow_until_the_lists_fit() {
        let p = program(64, 48, sample_ops());
        let full = bin_program(&p, usize::MAX).unwrap().ops.len();
        let bins = assert_binning_preserves_pixels(&p, full - 1);
        assert!(bins.grid.tile > BASE_TILE);
        assert!(bins.ops.len() < full);
        assert!(bin_program(&p, 0).is_none());
    }

    /// Tile corners land on every circle's rim somewhere in this sweep, so a
    /// cover or skip test that is off by one pixel of radius shows up.
    #[test]
    fn circle_cover_and_outline_skip_are_exact() {
        let red = [255, 0, 0, 255];
        let blue = [0, 0, 255, 255];
        for r in 8..44 {
            for (cx, cy) in [(31, 31), (32, 29), (27, 36)] {
                for fill in [true, false] {
                    let ops = vec![
                        op(Shape::Fill, red),
                        op(
                            Shape::Circle {
                                cx,
                                cy,
                                r: r - 3,
                                fill: true,
                            },
                            [0, 255, 0, 255],
                        ),
                        op(Shape::Circle { cx, cy, r, fill }, blue),
                    ];
                    assert_binning_preserves_pixels(&program(64, 64, ops), usize::MAX);
                }
            }
        }
    }

    #[test]
    fn rect_cover_and_outline_skip_are_exact() {
        for (x, y, width, height) in [
            (0, 0, 32, 32),
            (0, 0, 31, 32),
            (0, 0, 32, 31),
            (1, 0, 31, 33),
            (-1, 15, 34, 18),
            (16, 16, 16, 15),
            (3, 3, 40, 40),
        ] {
            for fill in [true, false] {
                let ops = vec![
                    op(Shape::Fill, [255, 0, 0, 255]),
                    op(
                        Shape::Rect {
                            x: x + 1,
                            y: y + 1,
                            width: width - 2,
                            height: height - 2,
                            fill: true,
                        },
                        [0, 255, 0, 255],
                    ),
                    op(
                        Shape::Rect {
                            x,
                            y,
                            width,
                            height,
                            fill,
                        },
                        [0, 0, 255, 255],
                    ),
                ];
                assert_binning_preserves_pixels(&program(48, 48, ops), usize::MAX);
            }
        }
    }

    #[test]
    fn lines_of_every_slope_bin_exactly() {
        let mut ops = Vec::new();
        for k in -70..70i64 {
            let colour = [(k & 0xff) as u8, 9, 200, 255];
            ops.push(op(
                Shape::Line {
                    x1: -3,
                    y1: 15 + k / 7,
                    x2: 66,
                    y2: 15 + k,
                },
                colour,
            ));
            ops.push(op(
                Shape::Line {
                    x1: 47 - k / 5,
                    y1: 70,
                    x2: 47 + k,
                    y2: -5,
                },
                colour,
            ));
        }
        assert_binning_preserves_pixels(&program(64, 64, ops), usize::MAX);
    }

    #[test]
    fn long_diagonal_line_touches_few_tiles() {
        let line = op(
            Shape::Line {
                x1: 0,
                y1: 0,
                x2: 1023,
                y2: 1023,
            },
            [255; 4],
        );
        let bins = bin_program(&program(1024, 1024, vec![line]), usize::MAX).unwrap();
        // 64 tiles on the diagonal, plus neighbours where the line grazes a corner.
        assert!(bins.ops.len() <= 3 * 64, "{} entries", bins.ops.len());
    }

    #[test]
    fn off_canvas_ops_are_not_binned() {
        let ops = vec![
            op(
                Shape::Rect {
                    x: -50,
                    y: 0,
                    width: 50,
                    height: 10,
                    fill: true,
                },
                [255; 4],
            ),
            op(
                Shape::Circle {
                    cx: 100,
                    cy: 100,
                    r: 5,
                    fill: true,
                },
                [255; 4],
            ),
            op(
                Shape::Text {
                    x: 0,
                    y: -8,
                    scale: 1,
                    glyphs: vec![1, 2],
                },
                [255; 4],
            ),
        ];
        let bins = bin_program(&program(32, 32, ops), usize::MAX).unwrap();
        assert!(bins.ops.is_empty());
    }
}
