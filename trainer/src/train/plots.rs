//! PNG curves beside the checkpoints: `loss.png`, `lr.png`, `metrics.png` (and
//! `codebook.png` for the tokenizer and pretraining: perplexity, used/dead codes).
//!
//! Drawn from `log.jsonl` with plotters' bitmap backend. Text goes through plotters'
//! pure-Rust `ab_glyph` renderer, so the build needs no freetype/fontconfig; a TrueType
//! font is looked up at run time (`LABRAM_PLOT_FONT`, then the usual DejaVu/Liberation
//! paths). Without one the curves are still drawn, only without captions and labels.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use serde_json::{Map, Value};

use super::logbook::{log_path, read_records};

/// Errors drawing a plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("cannot read the log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
}

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers a system font with plotters once; false when none was found.
fn font_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let env = std::env::var_os("LABRAM_PLOT_FONT").map(PathBuf::from);
        let candidates = env
            .into_iter()
            .chain(FONT_CANDIDATES.iter().map(PathBuf::from));
        for p in candidates {
            if let Ok(bytes) = std::fs::read(&p) {
                // The font must live as long as plotters' registry: leak it once.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
                {
                    return true;
                }
            }
        }
        tracing::warn!("no TrueType font found for plot labels (set LABRAM_PLOT_FONT to a .ttf); plots are drawn without text");
        false
    })
}

/// One named curve of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws `series` as lines into a 900×500 PNG at `path`. Empty series are skipped;
/// nothing is written when all are empty.
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<bool, PlotError> {
    let pts: Vec<&(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
        .collect();
    if pts.is_empty() {
        return Ok(false);
    }
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in &pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if log_y {
        y0 = y0.log10();
        y1 = y1.log10();
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let text = font_available();
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut b = ChartBuilder::on(&root);
    b.margin(12);
    if text {
        b.caption(title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(70);
    } else {
        b.x_label_area_size(0).y_label_area_size(0);
    }
    let mut chart = b.build_cartesian_2d(x0..x1, y0..y1).map_err(|e| err(&e))?;
    if text {
        let y_desc = if log_y { "log10" } else { "" };
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_desc)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
    } else {
        chart
            .configure_mesh()
            .disable_x_axis()
            .disable_y_axis()
            .draw()
            .map_err(|e| err(&e))?;
    }
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
            .map(|&(x, y)| (x, if log_y { y.log10() } else { y }))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let single = pts.len() == 1;
        let drawn = chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?;
        if text {
            drawn.label(s.name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
        if single || pts.len() <= 30 {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(true)
}

fn num(r: &Map<String, Value>, k: &str) -> Option<f64> {
    r.get(k).and_then(Value::as_f64)
}

const NOT_METRICS: &[&str] = &["epoch", "step", "time_s", "samples", "seconds"];

/// Redraws the three plots of a run directory from its log. Returns the files written.
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let lp = log_path(run_dir);
    let records = read_records(&lp).map_err(|source| PlotError::Log {
        path: lp.clone(),
        source,
    })?;
    let mut train_loss = Vec::new();
    let mut lr = Vec::new();
    let mut val_losses: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    let mut metrics: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    let mut codebook: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for r in &records {
        let step = num(r, "step").unwrap_or(0.0);
        match r.get("kind").and_then(Value::as_str) {
            Some("train") => {
                if let Some(l) = num(r, "loss") {
                    train_loss.push((step, l));
                }
                if let Some(v) = num(r, "lr") {
                    lr.push((step, v));
                }
            }
            Some("val") => {
                for (k, v) in r {
                    let Some(v) = v.as_f64() else { continue };
                    if NOT_METRICS.contains(&k.as_str()) {
                        continue;
                    }
                    let target = if k == "loss" || k.ends_with("_loss") {
                        &mut val_losses
                    } else if k.contains("perplexity") || k.ends_with("codes") {
                        &mut codebook
                    } else {
                        &mut metrics
                    };
                    target.entry(k.clone()).or_default().push((step, v));
                }
            }
            _ => {}
        }
    }
    let mut written = Vec::new();
    let mut loss_series = vec![Series {
        name: "train loss".into(),
        points: smooth(&train_loss),
    }];
    loss_series.extend(val_losses.into_iter().map(|(k, p)| Series {
        name: if k == "train_loss" {
            "train loss (epoch mean)".to_string()
        } else {
            format!("val {k}")
        },
        points: p,
    }));
    let plots = [
        ("loss.png", "Loss", loss_series, false),
        (
            "lr.png",
            "Learning rate (base; groups scale it)",
            vec![Series {
                name: "lr".into(),
                points: lr,
            }],
            false,
        ),
        (
            "metrics.png",
            "Validation metrics",
            metrics
                .into_iter()
                .map(|(k, p)| Series { name: k, points: p })
                .collect(),
            false,
        ),
    ];
    let plots = plots.into_iter().chain(std::iter::once((
        "codebook.png",
        "Codebook usage (validation)",
        codebook
            .into_iter()
            .map(|(k, p)| Series { name: k, points: p })
            .collect(),
        false,
    )));
    for (file, title, series, log_y) in plots {
        let path = run_dir.join(file);
        if line_plot(&path, title, "step", &series, log_y)? {
            written.push(path);
        }
    }
    Ok(written)
}

/// Running mean over a window of 1/50 of the points (at least 1), to make noisy
/// per-step losses readable.
fn smooth(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let w = (points.len() / 50).max(1);
    if w == 1 {
        return points.to_vec();
    }
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    for i in 0..points.len() {
        sum += points[i].1;
        if i >= w {
            sum -= points[i - w].1;
        }
        let n = (i + 1).min(w) as f64;
        out.push((points[i].0, sum / n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::logbook::Logbook;

    #[test]
    fn plots_are_png_files() {
        let d = tempfile::tempdir().unwrap();
        let mut lb = Logbook::open(d.path(), None).unwrap();
        for s in 1..=30u64 {
            let fields = [
                ("loss", Value::from(1.0 / s as f64)),
                ("lr", Value::from(1e-4 * s as f64)),
            ];
            lb.record("train", 0, s, &fields).unwrap();
            if s % 10 == 0 {
                let v = [
                    ("loss", Value::from(0.5)),
                    ("balanced_accuracy", Value::from(0.5 + s as f64 / 100.0)),
                ];
                lb.record("val", 0, s, &v).unwrap();
            }
        }
        drop(lb);
        let files = plot_run(d.path()).unwrap();
        assert_eq!(files.len(), 3);
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{}", f.display());
            assert!(
                bytes.len() > 2000,
                "{} is {} bytes",
                f.display(),
                bytes.len()
            );
        }
    }
}
