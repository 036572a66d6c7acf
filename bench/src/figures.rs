//! The figures (PNG, plotters' bitmap backend), drawn only from what this run measured:
//! throughput per scenario, open-loop latency CDFs, and Envoy CPU per request stage by stage.

use crate::method::{Measurements, ScenarioData};
use crate::scenarios::Scenario;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const FONT: &str = "sans-serif";
const FONT_FILES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers a TrueType font with plotters (pure-Rust text rendering needs one), once.
fn register_font() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let path = FONT_FILES
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                "no DejaVuSans.ttf for the figures' text: `apt-get install fonts-dejavu-core`"
                    .to_owned()
            })?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a usable font", path.display()))
    })
    .clone()
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One bar: label, value, optional (min, max) whisker.
struct Bar {
    label: String,
    value: f64,
    range: Option<(f64, f64)>,
    /// The value this bar adds to, shown as `+added` above it.
    base: Option<f64>,
}

fn bar_chart(path: &Path, title: &str, y_desc: &str, bars: &[Bar]) -> Result<(), String> {
    let root = BitMapBackend::new(path, (1200, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let top = bars
        .iter()
        .map(|b| b.range.map_or(b.value, |r| r.1).max(b.value))
        .fold(0.0_f64, f64::max)
        * 1.15;
    let n = bars.len() as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 21))
        .margin(15)
        .x_label_area_size(70)
        .y_label_area_size(80)
        .build_cartesian_2d((0..(n - 1).max(0)).into_segmented(), 0.0..top.max(1.0))
        .map_err(err)?;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => labels
                .get(usize::try_from(*i).unwrap_or(usize::MAX))
                .cloned()
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .x_label_style((FONT, 15))
        .y_label_style((FONT, 15))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc(y_desc)
        .axis_desc_style((FONT, 17))
        .draw()
        .map_err(err)?;
    for (i, b) in bars.iter().enumerate() {
        let i = i as i32;
        let color = Palette99::pick(i as usize).to_rgba();
        chart
            .draw_series(std::iter::once({
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), b.value),
                    ],
                    color.filled(),
                );
                bar.set_margin(0, 0, 10, 10);
                bar
            }))
            .map_err(err)?;
        if let Some((lo, hi)) = b.range {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![
                        (SegmentValue::CenterOf(i), lo),
                        (SegmentValue::CenterOf(i), hi),
                    ],
                    BLACK.stroke_width(2),
                )))
                .map_err(err)?;
        }
        chart
            .draw_series(std::iter::once(Text::new(
                match b.base {
                    Some(base) => format!("{:.0} ({:+.0})", b.value, b.value - base),
                    None => format!("{:.0}", b.value),
                },
                (
                    SegmentValue::CenterOf(i),
                    b.range.map_or(b.value, |r| r.1.max(b.value)) + top * 0.02,
                ),
                (FONT, 15).into_font(),
            )))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

fn measured(m: &Measurements, s: Scenario) -> Option<&ScenarioData> {
    m.data.get(&s).filter(|d| !d.closed.is_empty())
}

fn throughput(m: &Measurements, dir: &Path) -> Result<Option<PathBuf>, String> {
    let bars: Vec<Bar> = Scenario::ALL
        .iter()
        .filter_map(|s| {
            let d = measured(m, *s)?;
            let rps: Vec<f64> = d.closed.iter().map(|x| x.rps).collect();
            Some(Bar {
                label: s.id().to_owned(),
                value: ScenarioData::median_of(&d.closed, |x| x.rps)?,
                range: Some((
                    rps.iter().copied().fold(f64::INFINITY, f64::min),
                    rps.iter().copied().fold(0.0, f64::max),
                )),
                base: None,
            })
        })
        .collect();
    if bars.is_empty() {
        return Ok(None);
    }
    let path = dir.join("throughput.png");
    bar_chart(
        &path,
        "Closed-loop throughput per scenario (median, min-max of rounds)",
        "requests / s",
        &bars,
    )?;
    Ok(Some(path))
}

fn stage_cost(m: &Measurements, dir: &Path) -> Result<Option<PathBuf>, String> {
    // Each stage with the stage it adds to: the label shows the added µs.
    let stages = [
        (Scenario::S0, "HTTP", None),
        (Scenario::S1, "+TLS", Some(Scenario::S0)),
        (Scenario::S2, "+mTLS", Some(Scenario::S1)),
        (Scenario::S2w, "+Wasm", Some(Scenario::S2)),
        (Scenario::S3, "+jwt_authn", Some(Scenario::S2)),
        (Scenario::S5, "certbind", Some(Scenario::S2w)),
        (Scenario::S4, "+ext_authz", Some(Scenario::S3)),
    ];
    let cpu = |s: Scenario| {
        measured(m, s).and_then(|d| ScenarioData::median_of(&d.closed, |x| x.cpu_us_per_req))
    };
    let bars: Vec<Bar> = stages
        .iter()
        .filter_map(|(s, label, base)| {
            Some(Bar {
                label: format!("{} {label}", s.id()),
                value: cpu(*s)?,
                range: None,
                base: base.and_then(cpu),
            })
        })
        .collect();
    if bars.is_empty() {
        return Ok(None);
    }
    let path = dir.join("stage_cost.png");
    bar_chart(
        &path,
        "Envoy CPU µs per request; (+n) added over the previous stage (S3 over S2, S5 over S2w, S4 over S3)",
        "µs of Envoy CPU per request",
        &bars,
    )?;
    Ok(Some(path))
}

fn latency_cdf(m: &Measurements, dir: &Path) -> Result<Option<PathBuf>, String> {
    let curves: Vec<(Scenario, Vec<(f64, f64)>)> = m
        .data
        .iter()
        .filter_map(|(s, d)| {
            let h = d.open_hist.as_ref().filter(|h| !h.is_empty())?;
            let mut qs: Vec<f64> = (0..=100).map(|i| f64::from(i) / 100.0).collect();
            qs.extend([0.995, 0.999, 0.9995, 0.9999]);
            qs.sort_by(f64::total_cmp);
            let pts = qs
                .into_iter()
                .map(|q| ((h.value_at_quantile(q).max(1)) as f64, q * 100.0))
                .collect();
            Some((*s, pts))
        })
        .collect();
    if curves.is_empty() {
        return Ok(None);
    }
    let max_x = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(10.0, f64::max)
        * 1.5;
    let min_x = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
        * 0.8;
    let rate = m.open_rate.unwrap_or(0.0);
    let path = dir.join("latency_cdf.png");
    let root = BitMapBackend::new(path.as_path(), (1200, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Open-loop latency CDF at {rate:.0} rps (from intended send time)"),
            (FONT, 26),
        )
        .margin(15)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d((min_x..max_x).log_scale(), 0.0..100.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("latency, µs (log)")
        .y_desc("percent of requests")
        .x_label_style((FONT, 15))
        .y_label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()
        .map_err(err)?;
    for (i, (s, pts)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(format!("{} {}", s.id(), s.describe()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    drop(chart);
    drop(root);
    Ok(Some(path))
}

/// Draws every figure the measurements allow into `dir`; returns the files written.
pub fn draw_all(m: &Measurements, dir: &Path) -> Result<Vec<PathBuf>, String> {
    register_font()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok([
        throughput(m, dir)?,
        latency_cdf(m, dir)?,
        stage_cost(m, dir)?,
    ]
    .into_iter()
    .flatten()
    .collect())
}

/// `soak.png`: Envoy's RSS (top) and the valid calls' p99 per window (bottom) over the soak.
pub fn soak(report: &serde_json::Value, dir: &Path) -> Result<PathBuf, String> {
    register_font()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let series = |key: &str| -> Vec<(f64, f64)> {
        report[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (rss, p99) = (series("rss_mb"), series("valid_p99_ms_per_window"));
    let end = report["seconds"].as_f64().unwrap_or(1.0).max(1.0);
    let path = dir.join("soak.png");
    let root = BitMapBackend::new(path.as_path(), (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(400);
    for (area, points, title, y_desc) in [
        (&top, &rss, "Soak: Envoy RSS", "RSS, MB"),
        (
            &bottom,
            &p99,
            "Soak: p99 of the valid calls per window",
            "p99, ms",
        ),
    ] {
        let max_y = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 24))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..end, 0.0..max_y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(y_desc)
            .x_label_style((FONT, 15))
            .y_label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                BLUE.stroke_width(2),
            ))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    drop((top, bottom));
    drop(root);
    Ok(path)
}

/// `make overload`'s figure: per second of the open loop, requests sent, accepted, refused as
/// their kind must be and shed; the accepted requests' p99 (log scale); Envoy's CPU and RSS. The
/// dashed lines mark the overload phase.
pub fn overload(report: &serde_json::Value, dir: &Path) -> Result<PathBuf, String> {
    register_font()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let rows = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    let (seconds, samples) = (rows("per_second"), rows("samples"));
    // The second's midpoint: second k covers [k, k + 1).
    let series = |f: &dyn Fn(&serde_json::Value) -> Option<f64>| -> Vec<(f64, f64)> {
        seconds
            .iter()
            .filter_map(|s| Some((s["t"].as_f64()? + 0.5, f(s)?)))
            .collect()
    };
    let n = |key: &'static str| move |s: &serde_json::Value| s[key].as_f64();
    let shed = |s: &serde_json::Value| {
        s["shed"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_f64()).sum())
    };
    let sampled = |key: &str, scale: f64| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter_map(|s| Some((s["t"].as_f64()?, s[key].as_f64()? * scale)))
            .collect()
    };
    let plan = &report["plan"];
    let (b, o, r) = (
        plan["baseline_s"].as_f64().unwrap_or(0.0),
        plan["overload_s"].as_f64().unwrap_or(0.0),
        plan["recovery_s"].as_f64().unwrap_or(0.0),
    );
    let end = (b + o + r).max(1.0);
    let marks = [b, b + o];
    let path = dir.join("overload.png");
    let root = BitMapBackend::new(path.as_path(), (1200, 1300)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((4, 1));
    // title, y axis, its lines (label, colour, points), log scale
    type Line = (&'static str, RGBColor, Vec<(f64, f64)>);
    let panels: [(&str, &str, Vec<Line>, bool); 4] = [
        (
            "Overload: requests per second (by intended send time)",
            "requests/s",
            vec![
                ("sent", BLACK, series(&n("sent"))),
                ("accepted (200)", BLUE, series(&n("accepted"))),
                ("shed (connection refused or 503)", RED, series(&shed)),
                (
                    "refused as their kind must be",
                    GREEN,
                    series(&n("refused_as_expected")),
                ),
            ],
            false,
        ),
        (
            "p99 from the intended send time (log scale)",
            "p99, ms",
            vec![
                ("accepted", BLUE, series(&n("accepted_p99_ms"))),
                ("shed", RED, series(&n("shed_p99_ms"))),
            ],
            true,
        ),
        (
            "CPU: Envoy (its own core); the PDP and the load generator (sharing the other)",
            "CPU, % of a core",
            vec![
                ("Envoy", BLUE, sampled("envoy_cpu", 100.0)),
                ("PDP", MAGENTA, sampled("pdp_cpu", 100.0)),
                ("load generator", BLACK, sampled("generator_cpu", 100.0)),
            ],
            false,
        ),
        (
            "Envoy RSS",
            "RSS, MB",
            vec![("Envoy", BLUE, sampled("rss_mb", 1.0))],
            false,
        ),
    ];
    // The same drawing on a linear or a log y axis (different chart types).
    macro_rules! panel {
        ($chart:expr, $y_desc:expr, $lines:expr, $lo:expr, $hi:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .y_desc($y_desc)
                .x_label_style((FONT, 14))
                .y_label_style((FONT, 14))
                .axis_desc_style((FONT, 16))
                .draw()
                .map_err(err)?;
            for x in marks {
                chart
                    .draw_series(DashedLineSeries::new(
                        [(x, $lo), (x, $hi)],
                        6,
                        4,
                        BLACK.stroke_width(1),
                    ))
                    .map_err(err)?;
            }
            for (label, color, points) in $lines {
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .map_err(err)?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font((FONT, 14))
                .draw()
                .map_err(err)?;
        }};
    }
    for (area, (title, y_desc, lines, log)) in areas.iter().zip(panels) {
        let values = || lines.iter().flat_map(|l| l.2.iter().map(|p| p.1));
        let max_y = values().fold(1.0, f64::max) * 1.2;
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70);
        if log {
            let min_y = values()
                .filter(|v| *v > 0.0)
                .fold(max_y, f64::min)
                .max(0.01)
                * 0.8;
            let chart = builder
                .build_cartesian_2d(0.0..end, (min_y..max_y).log_scale())
                .map_err(err)?;
            panel!(chart, y_desc, lines, min_y, max_y);
        } else {
            let chart = builder
                .build_cartesian_2d(0.0..end, 0.0..max_y)
                .map_err(err)?;
            panel!(chart, y_desc, lines, 0.0, max_y);
        }
    }
    root.present().map_err(err)?;
    drop(areas);
    drop(root);
    Ok(path)
}
