//! gvpie-runner: executes Auto-GVPIE pixel programs on the GPU.
//!
//! `render` reads like the pipeline it drives: parse and validate → open the
//! device → bin ops into tiles → upload → dispatch the compute shader → read
//! the pixels back → write the PNG.

mod binning;
mod font;
mod gpu;
mod json;
mod program;

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use crate::font::Font;
use crate::gpu::{ms_since, Gpu};

#[derive(Parser)]
#[command(
    name = "gvpie-runner",
    version,
    about = "Executes Auto-GVPIE pixel programs on the GPU (wgpu compute)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the graphics adapters wgpu sees (name, backend, device type).
    Info {
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Render pixel programs to PNG files.
    Render {
        /// Pixel program JSON files.
        #[arg(required = true)]
        programs: Vec<PathBuf>,
        /// Output PNG (one program).
        #[arg(long, conflicts_with = "out_dir")]
        out: Option<PathBuf>,
        /// Output folder, one <program stem>.png each (any number of programs).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Use the first adapter whose name contains this text.
        #[arg(long)]
        adapter: Option<String>,
        /// Print one JSON report per program (one per line).
        #[arg(long)]
        json: bool,
        /// Cap on tile-list entries (default: the device's storage-binding limit); a lower cap
        /// forces larger tiles, which the parity tests use to exercise that path.
        #[arg(long, hide = true)]
        max_tile_entries: Option<usize>,
    },
}

/// Failures that end the run; `Input` ones are the caller's fault (exit 2).
enum Failure {
    Input(String),
    Runtime(String),
}

impl From<gpu::GpuError> for Failure {
    fn from(e: gpu::GpuError) -> Failure {
        Failure::Runtime(e.to_string())
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { json } => info(json),
        Command::Render {
            programs,
            out,
            out_dir,
            adapter,
            json,
            max_tile_entries,
        } => {
            let targets = Targets {
                out: out.as_deref(),
                out_dir: out_dir.as_deref(),
            };
            render(
                started,
                &programs,
                targets,
                adapter.as_deref(),
                json,
                max_tile_entries,
            )
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(message)) => {
            eprintln!("gvpie-runner: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("gvpie-runner: {message}");
            ExitCode::from(1)
        }
    }
}

fn info(as_json: bool) -> Result<(), Failure> {
    let adapters = gpu::list_adapters();
    if as_json {
        let list: Vec<Value> = adapters
            .iter()
            .map(|a| json!({"name": a.name, "backend": a.backend, "device_type": a.device_type, "driver": a.driver}))
            .collect();
        println!("{}", json!({ "adapters": list }));
    } else if adapters.is_empty() {
        println!(
            "no adapters (is a Vulkan driver installed? e.g. mesa-vulkan-drivers + libvulkan1)"
        );
    } else {
        for a in &adapters {
            println!("{}\t{}\t{}\t{}", a.name, a.backend, a.device_type, a.driver);
        }
    }
    Ok(())
}

/// Where the PNGs go: `--out` for one program or `--out-dir` for any number.
struct Targets<'a> {
    out: Option<&'a Path>,
    out_dir: Option<&'a Path>,
}

fn render(
    started: Instant,
    paths: &[PathBuf],
    targets: Targets,
    adapter: Option<&str>,
    as_json: bool,
    max_tile_entries: Option<usize>,
) -> Result<(), Failure> {
    let targets: Vec<PathBuf> = match (targets.out, targets.out_dir) {
        (Some(out), None) if paths.len() == 1 => vec![out.to_path_buf()],
        (Some(_), None) => {
            return Err(Failure::Input(
                "--out takes one program; use --out-dir for several".into(),
            ))
        }
        (None, Some(dir)) => paths.iter().map(|p| dir.join(png_name(p))).collect(),
        _ => {
            return Err(Failure::Input(
                "give --out FILE.png or --out-dir DIR".into(),
            ))
        }
    };

    // Parse and validate everything first: a bad program fails before any GPU work.
    let mut programs = Vec::with_capacity(paths.len());
    for path in paths {
        let t = Instant::now();
        let text = read_program(path)?;
        // Python's json.loads(bytes), which the CPU side uses, skips a UTF-8 byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let program = program::parse_program(text)
            .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
        programs.push((program, ms_since(t)));
    }

    // Setup: adapter, device, shader and pipeline, once for all programs.
    let t = Instant::now();
    let font = Font::builtin().map_err(|e| Failure::Runtime(e.to_string()))?;
    let gpu = Gpu::open(adapter, &font)?;
    let setup_ms = ms_since(t);

    for (i, ((program, parse_ms), target)) in programs.iter().zip(&targets).enumerate() {
        let program_started = Instant::now();
        gpu.check_canvas(program)?;

        let t = Instant::now();
        let max_entries = gpu
            .max_binding_words()
            .min(max_tile_entries.unwrap_or(usize::MAX));
        let bins = binning::bin_program(program, max_entries).ok_or_else(|| {
            Failure::Runtime("the tile lists exceed the device's storage buffer limit".into())
        })?;
        let binning_ms = ms_since(t);

        let t = Instant::now();
        let uploaded = gpu.upload(program, &bins)?;
        let upload_ms = ms_since(t);

        let dispatched = gpu.dispatch(&uploaded)?;

        let t = Instant::now();
        let rgba = gpu.read_back(&uploaded)?;
        let readback_ms = ms_since(t);

        let t = Instant::now();
        write_png(target, program.width, program.height, &rgba)
            .map_err(|e| Failure::Runtime(format!("{}: {e}", target.display())))?;
        let png_ms = ms_since(t);

        if as_json {
            let report = json!({
                "program": paths[i].display().to_string(),
                "out": target.display().to_string(),
                "adapter": {"name": gpu.adapter.name, "backend": gpu.adapter.backend,
                            "device_type": gpu.adapter.device_type, "driver": gpu.adapter.driver},
                "canvas": {"width": program.width, "height": program.height},
                "n_ops": program.ops.len(),
                "render_cost": program::render_cost(program),
                "tile_size": bins.grid.tile,
                "tile_entries": bins.ops.len(),
                "compute_timer": if dispatched.gpu_ms.is_some() { "timestamp_query" } else { "wall" },
                "timings_ms": {
                    "parse": parse_ms,
                    "setup": setup_ms,
                    "binning": binning_ms,
                    "upload": upload_ms,
                    "compute": dispatched.gpu_ms.unwrap_or(dispatched.wall_ms),
                    "compute_wall": dispatched.wall_ms,
                    "readback": readback_ms,
                    "png_encode": png_ms,
                    // One program: process start to PNG written. In a batch the setup is shared
                    // (reported above), so each program's total is its own stages.
                    "total": if targets.len() == 1 { ms_since(started) } else { ms_since(program_started) },
                },
            });
            println!("{report}");
        }
    }
    Ok(())
}

/// The program's text; its size is checked before it is read (a pipe is read up to the limit).
fn read_program(path: &Path) -> Result<String, Failure> {
    let cannot =
        |e: std::io::Error| Failure::Input(format!("{}: cannot read: {e}", path.display()));
    let too_big =
        |size: u64| Failure::Input(format!("{}: {}", path.display(), program::size_error(size)));
    let file = File::open(path).map_err(cannot)?;
    let size = file.metadata().map_err(cannot)?.len();
    if size > program::MAX_PROGRAM_BYTES as u64 {
        return Err(too_big(size));
    }
    let mut bytes = Vec::new();
    file.take(program::MAX_PROGRAM_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() > program::MAX_PROGRAM_BYTES {
        let limit = program::thousands(program::MAX_PROGRAM_BYTES as u64);
        return Err(Failure::Input(format!(
            "{}: $: the program is more than {limit} bytes; at most {limit}",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        Failure::Input(format!(
            "{}: $: invalid JSON: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

fn png_name(program: &Path) -> PathBuf {
    let stem = program
        .file_stem()
        .map(|s| s.to_os_string())
        .unwrap_or_else(|| "program".into());
    PathBuf::from(stem).with_extension("png")
}

fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    rgba: &[u8],
) -> Result<(), Box<dyn std::error::Error>> {
    let file = BufWriter::new(File::create(path)?);
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgba)?;
    writer.finish()?;
    Ok(())
}
