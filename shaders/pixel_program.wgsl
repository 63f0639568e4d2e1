// Pixel programs v1 (docs/pixel_programs.md), one invocation per canvas pixel.
// Each pixel replays, in program order, the ops binned into its screen tile
// and blends the ones that cover it. Integer arithmetic only: with the
// validator's limits every value below fits in i32 for on-canvas pixels.

struct Params {
    width: u32,
    height: u32,
    tile: u32,      // side of a binning tile in pixels
    tiles_x: u32,
}

// Written by rust_runner/src/gpu.rs (GpuOp); coordinates are inclusive.
struct Op {
    kind: u32,      // 0 FILL, 1 SET, 2 RECT, 3 LINE, 4 CIRCLE, 5 WRITE_TEXT
    color: u32,     // r | g << 8 | b << 16 | a << 24
    a: i32,         // SET x; RECT x0; LINE x1; CIRCLE cx; TEXT x
    b: i32,         // SET y; RECT y0; LINE y1; CIRCLE cy; TEXT y
    c: i32,         //        RECT x1; LINE x2; CIRCLE r;  TEXT scale
    d: i32,         //        RECT y1; LINE y2; CIRCLE fill; TEXT first glyph in `text`
    e: i32,         //        RECT fill;                   TEXT glyph count
    f: i32,         // unused, keeps the struct 32 bytes
}

const FILL: u32 = 0u;
const SET: u32 = 1u;
const RECT: u32 = 2u;
const LINE: u32 = 3u;
const CIRCLE: u32 = 4u;
const TEXT: u32 = 5u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ops: array<Op>;
@group(0) @binding(2) var<storage, read> tile_offsets: array<u32>;
@group(0) @binding(3) var<storage, read> tile_ops: array<u32>;
@group(0) @binding(4) var<storage, read> text: array<u32>;   // glyph index per character
@group(0) @binding(5) var<storage, read> font: array<u32>;   // 2 words per glyph, row r in byte r % 4
@group(0) @binding(6) var<storage, read_write> pixels: array<u32>;

// Floor division for d > 0 (WGSL's `/` truncates toward zero).
fn floor_div(n: i32, d: i32) -> i32 {
    let q = n / d;
    if (n % d != 0 && n < 0) {
        return q - 1;
    }
    return q;
}

// n / d rounded to nearest, halves toward +infinity (d != 0).
fn divround(n: i32, d: i32) -> i32 {
    if (d < 0) {
        return floor_div(-2 * n - d, -2 * d);
    }
    return floor_div(2 * n + d, 2 * d);
}

fn inside(dx: i32, dy: i32, k: i32) -> bool {
    return k >= 0 && dx * dx + dy * dy <= k * k + k;
}

fn covers_line(op: Op, px: i32, py: i32) -> bool {
    let dx = op.c - op.a;
    let dy = op.d - op.b;
    if (dx == 0 && dy == 0) {
        return px == op.a && py == op.b;
    }
    if (abs(dx) >= abs(dy)) {
        return px >= min(op.a, op.c) && px <= max(op.a, op.c)
            && py == op.b + divround((px - op.a) * dy, dx);
    }
    return py >= min(op.b, op.d) && py <= max(op.b, op.d)
        && px == op.a + divround((py - op.b) * dx, dy);
}

fn covers_text(op: Op, px: i32, py: i32) -> bool {
    let scale = op.c;
    let cell = 8 * scale;
    if (px < op.a || py < op.b || py >= op.b + cell) {
        return false;
    }
    let i = (px - op.a) / cell;
    if (i >= op.e) {
        return false;
    }
    let col = u32((px - op.a - i * cell) / scale);
    let row = u32((py - op.b) / scale);
    let glyph = text[u32(op.d + i)];
    let word = font[glyph * 2u + row / 4u];
    let bits = (word >> (8u * (row % 4u))) & 0xffu;
    return (bits & (0x80u >> col)) != 0u;
}

fn covers(op: Op, px: i32, py: i32) -> bool {
    switch op.kind {
        case FILL: {
            return true;
        }
        case SET: {
            return px == op.a && py == op.b;
        }
        case RECT: {
            let in_area = px >= op.a && px <= op.c && py >= op.b && py <= op.d;
            let on_edge = px == op.a || px == op.c || py == op.b || py == op.d;
            return in_area && (op.e != 0 || on_edge);
        }
        case LINE: {
            return covers_line(op, px, py);
        }
        case CIRCLE: {
            let dx = px - op.a;
            let dy = py - op.b;
            return inside(dx, dy, op.c) && (op.d != 0 || !inside(dx, dy, op.c - 1));
        }
        case TEXT: {
            return covers_text(op, px, py);
        }
        default: {
            return false;
        }
    }
}

// out = (s * a + d * (255 - a) + 127) / 255 per channel.
fn blend(dst: vec3<u32>, color: u32) -> vec3<u32> {
    let src = vec3<u32>(color & 0xffu, (color >> 8u) & 0xffu, (color >> 16u) & 0xffu);
    let a = color >> 24u;
    return (src * a + dst * (255u - a) + vec3<u32>(127u)) / 255u;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.width || gid.y >= params.height) {
        return;
    }
    let px = i32(gid.x);
    let py = i32(gid.y);
    let tile = (gid.y / params.tile) * params.tiles_x + gid.x / params.tile;
    var rgb = vec3<u32>(0u, 0u, 0u);
    let end = tile_offsets[tile + 1u];
    for (var k = tile_offsets[tile]; k < end; k++) {
        let op = ops[tile_ops[k]];
        if (covers(op, px, py)) {
            rgb = blend(rgb, op.color);
        }
    }
    pixels[gid.y * params.width + gid.x] = rgb.x | (rgb.y << 8u) | (rgb.z << 16u) | 0xff000000u;
}
