//! Benchmark (issue 9 point 8): loads a roster of templates into a simulated R307 (512-byte
//! templates, 1000-slot library, 128-byte data packets) over a pseudo-terminal, the driver
//! opening the pty's slave by path through tokio-serial as it opens /dev/ttyAMA0 on a Pi, and
//! compares the time with the UART's line-rate limit.
//!
//! A pty has no baud rate: the simulator paces every byte at the configured rate, 10 bits a byte
//! (8N1), each direction on its own (`SimHandle::serve_at_baud`). The simulator takes no time to
//! write flash, so the figure is the driver's and the line's; a real module adds its Store time.
//!
//! The limit counts every byte that must cross the wire for the load as the driver does it: per
//! template DownChar (13 bytes) and its acknowledgement (12), the data packets (9 bytes of
//! header and length, 2 of checksum each), Store (15) and its acknowledgement (12). The protocol
//! is one exchange at a time, so the directions do not overlap and the limit is the sum of both
//! divided by the line rate.
//!
//! ```text
//! cargo run --release -p rollcall-drivers --example load_library [-- --templates 1000 --baud 57600]
//! ```
//! Without `--baud` it runs at 57600 (the module's default) and then 115200; last, once without
//! pacing, to show what the software itself costs per template.

use std::time::{Duration, Instant};

use rollcall_drivers::ef01::Ef01;
use rollcall_drivers::ef01::sim::{Ef01Sim, SimHandle, SimModel};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Run {
    baud: u32,
    templates: usize,
    to_module: u64,
    to_host: u64,
    took: Duration,
    turnaround: Duration,
    late: Duration,
}

impl Run {
    fn limit(&self) -> Duration {
        Duration::from_secs_f64(
            (self.to_module + self.to_host) as f64 * 10.0 / f64::from(self.baud),
        )
    }
}

/// Loads `templates` templates with the simulator pacing bytes at `baud`, or as fast as the pty
/// carries them when `baud` is `None` (the software's own cost per template).
async fn run(baud: Option<u32>, templates: usize) -> Result<Run> {
    let model = SimModel::R307;
    let (master, slave) = SerialStream::pair()?;
    let path = slave.name().ok_or("pty slave has no path")?;
    let sim = SimHandle::new(Ef01Sim::new(model));
    let stop = CancellationToken::new();
    let (serve, token) = (sim.clone(), stop.clone());
    let server = tokio::spawn(async move {
        match baud {
            Some(baud) => serve.serve_at_baud(master, baud, token).await,
            None => serve.serve(master, token).await,
        }
    });

    let port = tokio_serial::new(&path, baud.unwrap_or(57_600)).open_native_async()?;
    let mut dev = Ef01::new(port);
    let params = dev.read_system_parameters().await?;
    if usize::from(params.library_size) < templates {
        return Err(format!("library of {} < {templates}", params.library_size).into());
    }
    let roster: Vec<Vec<u8>> = {
        let s = sim.lock();
        (0..templates as u32).map(|i| s.template_for(i)).collect()
    };

    let before = sim.lock().line_bytes();
    let stats_before = sim.line_stats();
    let started = Instant::now();
    for (slot, template) in roster.iter().enumerate() {
        dev.load_template(slot as u16, template).await?;
    }
    let took = started.elapsed();
    let after = sim.lock().line_bytes();
    let stats = sim.line_stats();

    // Every template landed, in its slot, intact.
    if usize::from(dev.template_count().await?) != templates
        || dev.read_index_table().await?.len() != templates
    {
        return Err("the module does not hold every template".into());
    }
    {
        let s = sim.lock();
        for (slot, template) in roster.iter().enumerate() {
            if s.library().get(&(slot as u16)) != Some(template) {
                return Err(format!("slot {slot} does not hold its template").into());
            }
        }
    }
    stop.cancel();
    server.await??;
    drop(slave);
    Ok(Run {
        baud: baud.unwrap_or(0),
        templates,
        to_module: after.0 - before.0,
        to_host: after.1 - before.1,
        took,
        turnaround: stats.host_turnaround - stats_before.host_turnaround,
        late: stats.simulator_late - stats_before.simulator_late,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut templates = 1000usize;
    let mut bauds = vec![57_600u32, 115_200];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--templates" => templates = value.parse()?,
            "--baud" => bauds = vec![value.parse()?],
            _ => return Err(format!("unknown argument {arg}").into()),
        }
    }
    let per_template = {
        let model = SimModel::R307;
        let size = 32usize << model.packet_size_code;
        let packets = model.template_len.div_ceil(size);
        13 + 12 + packets * 11 + model.template_len + 15 + 12
    };
    println!(
        "R307 model: 512-byte templates, 128-byte data packets; {per_template} bytes on the wire \
         per template by the protocol (10 bits each)\n"
    );
    println!(
        "| baud | templates | bytes host -> module / module -> host | line-rate limit | measured | \
         measured / limit | over the limit, per template | of it: host turnaround / simulator late | \
         measured less the simulator's lateness / limit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for baud in bauds {
        let r = run(Some(baud), templates).await?;
        let limit = r.limit();
        let idle = r.took.saturating_sub(limit) / r.templates.max(1) as u32;
        println!(
            "| {} | {} | {} / {} | {:.2} s | {:.2} s | {:.3} ({:+.1} %) | {:.2} ms | {:.2} ms / {:.2} ms | {:.3} ({:+.1} %) |",
            r.baud,
            r.templates,
            r.to_module,
            r.to_host,
            limit.as_secs_f64(),
            r.took.as_secs_f64(),
            r.took.as_secs_f64() / limit.as_secs_f64(),
            (r.took.as_secs_f64() / limit.as_secs_f64() - 1.0) * 100.0,
            idle.as_secs_f64() * 1000.0,
            r.turnaround.as_secs_f64() * 1000.0 / r.templates.max(1) as f64,
            r.late.as_secs_f64() * 1000.0 / r.templates.max(1) as f64,
            r.took.saturating_sub(r.late).as_secs_f64() / limit.as_secs_f64(),
            (r.took.saturating_sub(r.late).as_secs_f64() / limit.as_secs_f64() - 1.0) * 100.0,
        );
        let expected = (per_template * r.templates) as u64;
        if r.to_module + r.to_host != expected {
            println!(
                "(bytes counted by the simulator {} differ from the protocol's {expected})",
                r.to_module + r.to_host
            );
        }
    }
    let r = run(None, templates).await?;
    println!(
        "\nWithout pacing (pty at memory speed): {} templates in {:.3} s, {:.3} ms per template: \
         the driver's, the pty's and the simulator's own time for the four exchanges of a load.",
        r.templates,
        r.took.as_secs_f64(),
        r.took.as_secs_f64() * 1000.0 / r.templates.max(1) as f64
    );
    Ok(())
}
