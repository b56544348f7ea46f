//! What every demo shares: the common flags, the output folder, a progress bar, a summary
//! table, `metrics.json`, SVG plots, and a recurrent layer whose cell is picked at run time.
//!
//! Each demo includes this file with `mod common;`; the demo integration tests
//! (`tests/demo_NAME.rs`) include the demos themselves, so nothing here is a public API.
#![allow(dead_code)] // not every demo uses every helper

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use unroll::autograd::{Param, Var};
use unroll::rnn::{Gru, Layer, LayerConfig, Lstm, Module, Rnn, State};
use unroll::tensor::Rng;

/// The error type of the demos: anything displayable, so `main` can print it and exit 1.
pub type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Flags every demo has.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Seed for data splits, initialisation, dropout and sampling: the same seed gives the
    /// same numbers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where plots, the checkpoint and metrics.json go [default: target/demos/NAME]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Hide the progress bar and the per-epoch log lines.
    #[arg(long)]
    pub quiet: bool,
}

impl CommonArgs {
    /// The output folder (created if missing): `--out`, or `target/demos/<demo>`.
    pub fn out_dir(&self, demo: &str) -> DemoResult<PathBuf> {
        let dir = self
            .out
            .clone()
            .unwrap_or_else(|| Path::new("target").join("demos").join(demo));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create output folder {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// A progress bar over `len` steps, drawn on stderr only when stderr is a terminal and
    /// `--quiet` is off. Put the running loss in its message.
    pub fn progress(&self, len: u64) -> ProgressBar {
        if self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg} (eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    }

    /// Prints a line through the progress bar (so the bar is not torn) unless `--quiet`.
    pub fn log(&self, bar: &ProgressBar, line: impl AsRef<str>) {
        if !self.quiet {
            bar.suspend(|| println!("{}", line.as_ref()));
        }
    }
}

/// The recurrent cell, chosen with `--cell`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// Vanilla (Elman) RNN with tanh.
    Rnn,
    /// Long short-term memory.
    Lstm,
    /// Gated recurrent unit.
    Gru,
}

impl std::fmt::Display for CellKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CellKind::Rnn => "rnn",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
        })
    }
}

/// A recurrent layer whose cell is picked at run time (`nn.RNN`, `nn.LSTM` or `nn.GRU`).
pub enum Recurrent {
    Rnn(Rnn<f32>),
    Lstm(Lstm<f32>),
    Gru(Gru<f32>),
}

impl Recurrent {
    pub fn new(kind: CellKind, config: LayerConfig, rng: &mut Rng) -> Self {
        match kind {
            CellKind::Rnn => Recurrent::Rnn(Layer::rnn(config, rng)),
            CellKind::Lstm => Recurrent::Lstm(Layer::lstm(config, rng)),
            CellKind::Gru => Recurrent::Gru(Layer::gru(config, rng)),
        }
    }

    /// Number of state parts: 2 for LSTM (`h`, `c`), 1 otherwise.
    pub fn num_state_parts(&self) -> usize {
        match self {
            Recurrent::Lstm(_) => 2,
            _ => 1,
        }
    }

    /// Runs the layer: returns the output and the final state's parts (`[h_n]` or
    /// `[h_n, c_n]`, each `[layers·D, batch, hidden]`). `init` holds the same parts.
    pub fn forward(
        &self,
        x: &Var<f32>,
        init: Option<&[Var<f32>]>,
        lengths: Option<&[usize]>,
    ) -> (Var<f32>, Vec<Var<f32>>) {
        fn run<S: State<f32>>(
            forward: impl FnOnce(Option<&S>) -> unroll::rnn::LayerOutput<f32, S>,
            init: Option<&[Var<f32>]>,
        ) -> (Var<f32>, Vec<Var<f32>>) {
            let init = init.map(|parts| S::from_parts(parts.to_vec()));
            let out = forward(init.as_ref());
            let parts = out.state.parts();
            (out.output, parts)
        }
        match self {
            Recurrent::Rnn(l) => run(|i| l.forward_with(x, i, lengths), init),
            Recurrent::Lstm(l) => run(|i| l.forward_with(x, i, lengths), init),
            Recurrent::Gru(l) => run(|i| l.forward_with(x, i, lengths), init),
        }
    }
}

impl Module<f32> for Recurrent {
    fn named_params(&self) -> Vec<(String, Param<f32>)> {
        match self {
            Recurrent::Rnn(l) => l.named_params(),
            Recurrent::Lstm(l) => l.named_params(),
            Recurrent::Gru(l) => l.named_params(),
        }
    }

    fn set_training(&self, training: bool) {
        match self {
            Recurrent::Rnn(l) => l.set_training(training),
            Recurrent::Lstm(l) => l.set_training(training),
            Recurrent::Gru(l) => l.set_training(training),
        }
    }
}

/// Writes `value` as pretty JSON to `dir/metrics.json`.
pub fn write_metrics(dir: &Path, value: &serde_json::Value) -> DemoResult<PathBuf> {
    let path = dir.join("metrics.json");
    std::fs::write(&path, serde_json::to_string_pretty(value)? + "\n")
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Prints a table with a header row, columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                // First column left-aligned (names), the rest right-aligned (numbers).
                // Pad by characters, not bytes (`format!`'s width counts chars too).
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header.to_vec());
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// One line of a plot.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            points,
        }
    }
}

/// Axis labels and scale of a line plot.
pub struct Axes<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
    /// Logarithmic y axis (non-positive values are dropped).
    pub log_y: bool,
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

fn plot_error(e: impl std::fmt::Display) -> Box<dyn std::error::Error> {
    format!("plot: {e}").into()
}

/// A tick label: short decimals in the usual range, scientific notation outside it (so a
/// log axis reads `0.3`, not `0.30000000000000004`).
fn tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Draws `series` as lines in one SVG chart at `path`.
pub fn line_plot(path: &Path, axes: &Axes, series: &[Series]) -> DemoResult<()> {
    let keep = |y: f64| y.is_finite() && (!axes.log_y || y > 0.0);
    let points = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.0.is_finite() && keep(p.1))
    };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(format!("plot {}: no finite points", path.display()).into());
    }
    if x0 == x1 {
        x1 = x0 + 1.0;
    }
    if axes.log_y {
        (y0, y1) = (y0 / 1.5, y1 * 1.5);
    } else {
        let pad = ((y1 - y0) * 0.05).max(1e-9);
        (y0, y1) = (y0 - pad, y1 + pad);
    }

    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(axes.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(axes.x)
                .y_desc(axes.y)
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .draw()
                .map_err(plot_error)?;
            for (i, s) in series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| keep(p.1)).collect();
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(plot_error)?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(plot_error)?;
        }};
    }
    if axes.log_y {
        draw!(builder
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(plot_error)?);
    } else {
        draw!(builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_error)?);
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Draws a matrix as a heat map (row `r`, column `c` → `values[r][c]`, white = 0, dark blue =
/// the largest value) with labelled rows and columns, e.g. attention weights with output
/// tokens as rows and input tokens as columns.
pub fn heatmap(
    path: &Path,
    title: &str,
    values: &[Vec<f32>],
    row_labels: &[String],
    col_labels: &[String],
) -> DemoResult<()> {
    let rows = values.len();
    let cols = values.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 || row_labels.len() != rows || col_labels.len() != cols {
        return Err(format!(
            "heatmap {}: {rows}x{cols} values with {} row and {} column labels",
            path.display(),
            row_labels.len(),
            col_labels.len()
        )
        .into());
    }
    let max = values
        .iter()
        .flatten()
        .fold(0f32, |m, &v| m.max(v))
        .max(1e-12);
    let cell = 28u32;
    let (left, top) = (140u32, 120u32);
    // Wide enough for the grid and for the title (about 10 px per character at 18 px).
    let title_width = 20 + 10 * title.chars().count() as u32;
    let size = (
        (left + cell * cols as u32 + 20).max(title_width),
        top + cell * rows as u32 + 40,
    );
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    root.draw(&Text::new(
        title.to_string(),
        (10, 10),
        ("sans-serif", 18).into_font(),
    ))
    .map_err(plot_error)?;
    for (r, row) in values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let t = f64::from(v / max);
            let shade = |full: f64| (255.0 - (255.0 - full) * t).round() as u8;
            let color = RGBColor(shade(8.0), shade(48.0), shade(107.0));
            let x = (left + c as u32 * cell) as i32;
            let y = (top + r as u32 * cell) as i32;
            root.draw(&Rectangle::new(
                [(x, y), (x + cell as i32, y + cell as i32)],
                color.filled(),
            ))
            .map_err(plot_error)?;
        }
    }
    let font = ("sans-serif", 14).into_font();
    for (r, label) in row_labels.iter().enumerate() {
        let y = (top + r as u32 * cell + cell / 2 - 6) as i32;
        root.draw(&Text::new(label.clone(), (8, y), font.clone()))
            .map_err(plot_error)?;
    }
    let vertical = font.transform(FontTransform::Rotate270);
    for (c, label) in col_labels.iter().enumerate() {
        let x = (left + c as u32 * cell + cell / 2 - 6) as i32;
        root.draw(&Text::new(
            label.clone(),
            (x, top as i32 - 6),
            vertical.clone(),
        ))
        .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Draws `series` as points (no lines) in one SVG chart at `path`, both axes from `lo` to
/// `hi`: e.g. each unit's fraction of left- and right-saturated gate values.
pub fn scatter_plot(
    path: &Path,
    axes: &Axes,
    series: &[Series],
    (lo, hi): (f64, f64),
) -> DemoResult<()> {
    let root = SVGBackend::new(path, (640, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(axes.title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(lo..hi, lo..hi)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(axes.x)
        .y_desc(axes.y)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .draw()
        .map_err(plot_error)?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(
                (s.points.iter())
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .map(|&p| Circle::new(p, 4, color.mix(0.7).filled())),
            )
            .map_err(plot_error)?
            .label(s.label.as_str())
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Writes an SVG of `text` once per entry of `rows`, each character on a cell coloured by
/// that entry's value at its position (blue −1, white 0, red +1, clamped), as LSTMVis and
/// Karpathy et al. show what one hidden unit tracks. Lines break at newlines (drawn `↵`) and
/// after `width` characters.
pub fn text_heatmap(
    path: &Path,
    title: &str,
    text: &[char],
    rows: &[(String, Vec<f64>)],
    width: usize,
) -> DemoResult<()> {
    use std::fmt::Write;
    if let Some((name, v)) = rows.iter().find(|(_, v)| v.len() != text.len()) {
        return Err(format!(
            "text heat map {}: {} values for '{name}', {} characters",
            path.display(),
            v.len(),
            text.len()
        )
        .into());
    }
    // Where each character goes: (line, column).
    let mut places = Vec::with_capacity(text.len());
    let (mut line, mut col) = (0usize, 0usize);
    for &c in text {
        if col == width {
            (line, col) = (line + 1, 0);
        }
        places.push((line, col));
        col += 1;
        if c == '\n' {
            (line, col) = (line + 1, 0);
        }
    }
    let lines = places.last().map_or(0, |p| p.0 + 1);
    let (cw, ch, head, gap) = (10.0, 18.0, 26.0, 16.0);
    let panel = head + ch * lines as f64 + gap;
    let (w, h) = (cw * width as f64 + 20.0, 40.0 + panel * rows.len() as f64);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"monospace\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"10\" y=\"24\" font-family=\"sans-serif\" \
         font-size=\"17\">{}</text>",
        xml_escape(title)
    );
    for (k, (name, values)) in rows.iter().enumerate() {
        let top = 40.0 + panel * k as f64;
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{}\" font-family=\"sans-serif\" font-size=\"14\">{}</text>",
            top + 18.0,
            xml_escape(name)
        );
        for ((&c, &(line, col)), &v) in text.iter().zip(&places).zip(values) {
            let (x, y) = (10.0 + cw * col as f64, top + head + ch * line as f64);
            let t = v.clamp(-1.0, 1.0);
            // White at 0, towards (214, 39, 40) above and (31, 119, 180) below.
            let (r, g, b) = if t >= 0.0 {
                (214.0, 39.0, 40.0)
            } else {
                (31.0, 119.0, 180.0)
            };
            let mix = |full: f64| (255.0 - (255.0 - full) * t.abs()).round() as u8;
            let glyph = match c {
                '\n' => "↵".to_string(),
                c => xml_escape(&c.to_string()),
            };
            let _ = writeln!(
                svg,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{cw}\" height=\"{ch}\" \
                 fill=\"rgb({},{},{})\"/><text x=\"{}\" y=\"{}\">{glyph}</text>",
                mix(r),
                mix(g),
                mix(b),
                x + 1.5,
                y + 13.5
            );
        }
    }
    svg.push_str("</svg>\n");
    std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

/// `s` safe inside SVG text.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// For a demo's tests: an empty folder `name` beside the test binary (under the target
/// directory), for the files a run writes.
#[cfg(test)]
pub fn test_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().expect("a folder").join("demo-tmp").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
