//! Files a run can leave behind: the HdrHistogram log (`--hdr`) and a latency
//! percentile plot (`--plot`).

use std::path::Path;

use anyhow::{Context, bail};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use plotters::prelude::*;

use crate::report::Report;

/// Writes the measured histogram (µs) as an HdrHistogram interval log, one interval
/// spanning the measured window, readable by HdrHistogram's log tools.
pub fn write_hdr(report: &Report, path: &Path) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment("keymux-loadgen latency, microseconds")
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut file, &mut serializer)
        .context("HdrHistogram log header")?;
    writer
        .write_histogram(&report.histogram, std::time::Duration::ZERO, report.config.duration, None)
        .map_err(|e| anyhow::anyhow!("HdrHistogram log: {e:?}"))?;
    Ok(())
}

/// Plots latency against percentile (0 to 99.999, log-scaled in "nines") as SVG, or as
/// PNG when the file is named `*.png`. Needs a TrueType font: [`PLOT_FONTS`].
pub fn write_plot(report: &Report, path: &Path) -> anyhow::Result<()> {
    if report.histogram.is_empty() {
        bail!("nothing was measured, so there is nothing to plot");
    }
    let format = path.extension().and_then(|e| e.to_str());
    if !matches!(format, Some("svg" | "png")) {
        bail!("--plot writes SVG or PNG: name the file *.svg or *.png");
    }
    // Both formats lay text out with the font (SVG too, to place its labels).
    register_font()?;
    match format {
        Some("png") => draw(report, BitMapBackend::new(path, PLOT_SIZE).into_drawing_area()),
        _ => draw(report, SVGBackend::new(path, PLOT_SIZE).into_drawing_area()),
    }
    .with_context(|| format!("writing the plot {}", path.display()))
}

const PLOT_SIZE: (u32, u32) = (900, 500);

/// Where a plot looks for its font, after `$KEYMUX_PLOT_FONT` (Debian's
/// fonts-dejavu-core provides the first).
pub const PLOT_FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn register_font() -> anyhow::Result<()> {
    let candidates =
        std::env::var("KEYMUX_PLOT_FONT").into_iter().chain(PLOT_FONTS.iter().map(|p| (*p).to_owned()));
    for candidate in candidates {
        if let Ok(bytes) = std::fs::read(&candidate) {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
    }
    bail!(
        "a plot needs a TrueType font: set KEYMUX_PLOT_FONT or install one of {PLOT_FONTS:?} \
         (Debian: fonts-dejavu-core)"
    )
}

fn draw<DB>(report: &Report, root: DrawingArea<DB, plotters::coord::Shift>) -> anyhow::Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let histogram = &report.histogram;
    // x = number of nines: 0 -> p0, 1 -> p90, 2 -> p99, 3 -> p99.9, 5 -> p99.999.
    let points: Vec<(f64, f64)> = (0..=500)
        .map(|i| {
            let nines = f64::from(i) / 100.0;
            let quantile = 1.0 - 10f64.powf(-nines);
            (nines, histogram.value_at_quantile(quantile) as f64 / 1000.0)
        })
        .collect();
    let max_ms = points.iter().map(|(_, y)| *y).fold(0.0, f64::max).max(0.001) * 1.1;
    root.fill(&WHITE)?;
    let caption = format!(
        "{:?} against {}: {:.0} ops/s",
        report.config.op, report.config.target, report.throughput_ops_per_s
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..5f64, 0f64..max_ms)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|nines| match nines.round() as i32 {
            0 => "0".into(),
            1 => "90".into(),
            2 => "99".into(),
            3 => "99.9".into(),
            4 => "99.99".into(),
            _ => "99.999".into(),
        })
        .x_labels(6)
        .draw()?;
    chart.draw_series(LineSeries::new(points, &BLUE))?;
    root.present()?;
    Ok(())
}
