//! The wgpu side: choosing an adapter, the compute pipeline around
//! `shaders/pixel_program.wgsl`, uploads, the dispatch and the readback.

use std::fmt;
use std::sync::mpsc;
use std::time::Instant;

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use crate::binning::{Bins, BASE_TILE};
use crate::font::Font;
use crate::program::{Op, Program, Shape};

const SHADER: &str = include_str!("../../shaders/pixel_program.wgsl");

#[derive(Debug)]
pub struct GpuError(pub String);

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GpuError {}

fn gpu_error(context: &str, e: impl fmt::Display) -> GpuError {
    GpuError(format!("{context}: {e}"))
}

/// One op as the shader's `Op` struct reads it (see the WGSL for field meanings).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct GpuOp {
    kind: u32,
    color: u32,
    a: i32,
    b: i32,
    c: i32,
    d: i32,
    e: i32,
    f: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    width: u32,
    height: u32,
    tile: u32,
    tiles_x: u32,
}

/// Flattens ops for the shader; text glyphs go to a shared array the ops index into.
pub fn encode_ops(program: &Program) -> (Vec<GpuOp>, Vec<u32>) {
    let mut glyphs = Vec::new();
    let ops = program
        .ops
        .iter()
        .map(|Op { shape, color }| {
            let color = u32::from_le_bytes(*color);
            // Validated ranges keep every value well inside i32.
            let v = |x: i64| x as i32;
            let (kind, [a, b, c, d, e]) = match shape {
                Shape::Fill => (0, [0; 5]),
                Shape::Set { x, y } => (1, [v(*x), v(*y), 0, 0, 0]),
                Shape::Rect {
                    x,
                    y,
                    width,
                    height,
                    fill,
                } => (
                    2,
                    [
                        v(*x),
                        v(*y),
                        v(x + width - 1),
                        v(y + height - 1),
                        *fill as i32,
                    ],
                ),
                Shape::Line { x1, y1, x2, y2 } => (3, [v(*x1), v(*y1), v(*x2), v(*y2), 0]),
                Shape::Circle { cx, cy, r, fill } => (4, [v(*cx), v(*cy), v(*r), *fill as i32, 0]),
                Shape::Text {
                    x,
                    y,
                    scale,
                    glyphs: text,
                } => {
                    let first = glyphs.len() as i32;
                    glyphs.extend_from_slice(text);
                    (5, [v(*x), v(*y), v(*scale), first, text.len() as i32])
                }
            };
            GpuOp {
                kind,
                color,
                a,
                b,
                c,
                d,
                e,
                f: 0,
            }
        })
        .collect();
    (ops, glyphs)
}

#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
}

impl AdapterSummary {
    fn of(info: &wgpu::AdapterInfo) -> AdapterSummary {
        AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: [info.driver.as_str(), info.driver_info.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

fn instance() -> wgpu::Instance {
    // WGPU_BACKEND etc. from the environment narrow the search when set.
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

pub fn list_adapters() -> Vec<AdapterSummary> {
    let adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    adapters
        .iter()
        .map(|a| AdapterSummary::of(&a.get_info()))
        .collect()
}

/// Hardware first; a software rasteriser (lavapipe) only when nothing else is there.
fn preference(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Buffers of one program on the device.
pub struct Uploaded {
    bind_group: wgpu::BindGroup,
    pixels: wgpu::Buffer,
    width: u32,
    height: u32,
}

pub struct Dispatched {
    /// GPU time of the compute pass from timestamp queries, when the adapter has them.
    pub gpu_ms: Option<f64>,
    pub wall_ms: f64,
}

pub struct Gpu {
    pub adapter: AdapterSummary,
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    timestamps: bool,
    font_words: Vec<u32>,
}

impl Gpu {
    /// Picks an adapter (optionally the first whose name contains `name_filter`),
    /// opens a device with the adapter's own limits and builds the pipeline.
    pub fn open(name_filter: Option<&str>, font: &Font) -> Result<Gpu, GpuError> {
        let instance = instance();
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        if let Some(filter) = name_filter {
            let filter = filter.to_lowercase();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&filter));
        }
        adapters.sort_by_key(|a| preference(a.get_info().device_type));
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            GpuError(match name_filter {
                Some(f) => format!("no graphics adapter whose name contains {f:?} (see `gvpie-runner info`)"),
                None => "no graphics adapter found: install a Vulkan driver (e.g. Debian's mesa-vulkan-drivers and libvulkan1)".into(),
            })
        })?;
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let required_features = if timestamps {
            wgpu::Features::TIMESTAMP_QUERY
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("gvpie-runner"),
            required_features,
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| gpu_error("cannot open the device", e))?;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("pixel_program.wgsl"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("pixel program"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        Ok(Gpu {
            adapter: AdapterSummary::of(&adapter.get_info()),
            device,
            queue,
            pipeline,
            timestamps,
            font_words: font.packed_words(),
        })
    }

    /// How many u32 entries one storage binding may hold on this device.
    pub fn max_binding_words(&self) -> usize {
        let limits = self.device.limits();
        limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size) as usize
            / 4
    }

    pub fn check_canvas(&self, program: &Program) -> Result<(), GpuError> {
        let words = program.width as usize * program.height as usize;
        if words > self.max_binding_words() {
            return Err(GpuError(format!(
                "a {}x{} canvas needs {} MiB in one storage buffer; this device allows {} MiB",
                program.width,
                program.height,
                (words * 4) >> 20,
                (self.max_binding_words() * 4) >> 20
            )));
        }
        Ok(())
    }

    pub fn upload(&self, program: &Program, bins: &Bins) -> Result<Uploaded, GpuError> {
        let (ops, glyphs) = encode_ops(program);
        let params = Params {
            width: program.width,
            height: program.height,
            tile: bins.grid.tile,
            tiles_x: bins.grid.tiles_x,
        };
        let storage = |label: &str, words: &[u8]| {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: words,
                    usage: wgpu::BufferUsages::STORAGE,
                })
        };
        // Bindings cannot be empty: an unused word stands in for an empty list.
        let non_empty = |v: &[u32]| if v.is_empty() { vec![0u32] } else { v.to_vec() };
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::bytes_of(&params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let ops = if ops.is_empty() {
            vec![GpuOp::zeroed()]
        } else {
            ops
        };
        let ops = storage("ops", bytemuck::cast_slice(&ops));
        let offsets = storage("tile offsets", bytemuck::cast_slice(&bins.offsets));
        let tile_ops = storage("tile ops", bytemuck::cast_slice(&non_empty(&bins.ops)));
        let text = storage("text", bytemuck::cast_slice(&non_empty(&glyphs)));
        let font = storage("font", bytemuck::cast_slice(&self.font_words));
        let pixels = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pixels"),
            size: program.width as u64 * program.height as u64 * 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let layout = self.pipeline.get_bind_group_layout(0);
        let buffers = [&uniform, &ops, &offsets, &tile_ops, &text, &font, &pixels];
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("pixel program"),
            layout: &layout,
            entries: &entries,
        });
        // Queue writes land with the next submission: flush now so the upload is timed on its own.
        self.queue.submit([]);
        self.wait()?;
        Ok(Uploaded {
            bind_group,
            pixels,
            width: program.width,
            height: program.height,
        })
    }

    pub fn dispatch(&self, uploaded: &Uploaded) -> Result<Dispatched, GpuError> {
        let query = self.timestamps.then(|| TimestampQuery::new(&self.device));
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("pixel program"),
                timestamp_writes: query.as_ref().map(|q| wgpu::ComputePassTimestampWrites {
                    query_set: &q.set,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &uploaded.bind_group, &[]);
            pass.dispatch_workgroups(
                uploaded.width.div_ceil(BASE_TILE),
                uploaded.height.div_ceil(BASE_TILE),
                1,
            );
        }
        if let Some(q) = &query {
            q.resolve(&mut encoder);
        }
        let started = Instant::now();
        self.queue.submit([encoder.finish()]);
        self.wait()?;
        let wall_ms = ms_since(started);
        let gpu_ms = match &query {
            Some(q) => Some(q.read(self, self.queue.get_timestamp_period())?),
            None => None,
        };
        Ok(Dispatched { gpu_ms, wall_ms })
    }

    /// The canvas as RGBA8 rows (the shader packs r in the low byte).
    pub fn read_back(&self, uploaded: &Uploaded) -> Result<Vec<u8>, GpuError> {
        let size = uploaded.pixels.size();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&uploaded.pixels, 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        self.map_and_copy(&staging)
    }

    fn map_and_copy(&self, buffer: &wgpu::Buffer) -> Result<Vec<u8>, GpuError> {
        let (sender, receiver) = mpsc::channel();
        buffer.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = sender.send(result);
        });
        self.wait()?;
        receiver
            .recv()
            .map_err(|e| gpu_error("mapping never finished", e))?
            .map_err(|e| gpu_error("cannot map the readback buffer", e))?;
        let bytes = buffer
            .get_mapped_range(..)
            .map_err(|e| gpu_error("cannot read the mapped buffer", e))?
            .to_vec();
        buffer.unmap();
        Ok(bytes)
    }

    fn wait(&self) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| gpu_error("waiting for the GPU failed", e))
    }
}

struct TimestampQuery {
    set: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readable: wgpu::Buffer,
}

impl TimestampQuery {
    fn new(device: &wgpu::Device) -> TimestampQuery {
        let buffer = |usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: 16,
                usage,
                mapped_at_creation: false,
            })
        };
        TimestampQuery {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("compute pass"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolved: buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            readable: buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
        }
    }

    fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.set, 0..2, &self.resolved, 0);
        encoder.copy_buffer_to_buffer(&self.resolved, 0, &self.readable, 0, 16);
    }

    fn read(&self, gpu: &Gpu, period_ns: f32) -> Result<f64, GpuError> {
        let bytes = gpu.map_and_copy(&self.readable)?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        Ok(ticks[1].wrapping_sub(ticks[0]) as f64 * period_ns as f64 / 1e6)
    }
}

pub fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_encoded_with_inclusive_corners_and_shared_text() {
        let program = Program {
            width: 4,
            height: 4,
            ops: vec![
                Op {
                    shape: Shape::Rect {
                        x: -2,
                        y: 3,
                        width: 5,
                        height: 1,
                        fill: false,
                    },
                    color: [1, 2, 3, 4],
                },
                Op {
                    shape: Shape::Text {
                        x: 1,
                        y: 2,
                        scale: 3,
                        glyphs: vec![7, 8],
                    },
                    color: [0; 4],
                },
                Op {
                    shape: Shape::Text {
                        x: 0,
                        y: 0,
                        scale: 1,
                        glyphs: vec![9],
                    },
                    color: [0; 4],
                },
            ],
        };
        let (ops, glyphs) = encode_ops(&program);
        assert_eq!(
            ops[0],
            GpuOp {
                kind: 2,
                color: 0x0403_0201,
                a: -2,
                b: 3,
                c: 2,
                d: 3,
                e: 0,
                f: 0
            }
        );
        assert_eq!((ops[1].d, ops[1].e, ops[2].d, ops[2].e), (0, 2, 2, 1));
        assert_eq!(glyphs, vec![7, 8, 9]);
        assert_eq!(std::mem::size_of::<GpuOp>(), 32);
    }

    #[test]
    fn hardware_is_preferred_over_software() {
        assert!(preference(wgpu::DeviceType::DiscreteGpu) < preference(wgpu::DeviceType::Cpu));
        assert!(preference(wgpu::DeviceType::IntegratedGpu) < preference(wgpu::DeviceType::Cpu));
    }
}
