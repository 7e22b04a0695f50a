//! The report's charts, drawn with plotters into PNGs: the training and validation curves of
//! the penalty search (log-loss and accuracy against the L2 penalty, the chosen one marked),
//! and the confusion matrix with label names and counts. Text uses DejaVu Sans compiled into
//! the binary: Lambda has no system fonts.

use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use vision::Metrics;

/// The font family every chart uses (registered once per process).
const FONT: &str = "sans-serif";
const TRAINING: RGBColor = RGBColor(31, 119, 180);
const VALIDATION: RGBColor = RGBColor(255, 127, 14);
const CHOSEN: RGBColor = RGBColor(120, 120, 120);
/// Most labels drawn as a confusion matrix: past this the picture would be unreadable (and a
/// 1,000-label matrix alone would need hundreds of MB of pixels); the report says so instead.
pub const MAX_MATRIX_LABELS: usize = 40;
/// Longest label shown in full on a chart; longer ones are cut with "…".
const LABEL_CHARS: usize = 14;

fn register_fonts() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType font (the dejavu crate's); a failure would only
        // mean charts without text.
        let _ = register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// A PNG of the training and validation curves of the penalty search: cross-validated
/// log-loss and accuracy (held-out folds) beside the same on the folds' own training images.
pub fn curves_png(metrics: &Metrics) -> Option<Vec<u8>> {
    register_fonts();
    let (width, height) = (760u32, 300u32);
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let (left, right) = root.split_horizontally(width / 2);
        let mut search = metrics.penalty_search.clone();
        search.sort_by(|a, b| a.penalty.total_cmp(&b.penalty));
        let loss = |s: &vision::PenaltyScore| (s.train_log_loss, s.cv_log_loss);
        let accuracy = |s: &vision::PenaltyScore| (s.train_accuracy, s.cv_accuracy);
        let chosen = metrics.chosen_penalty.penalty;
        // Loss curves rise to the right and accuracy sits near the top: legends where they
        // cover least.
        let loss_panel = ("Log-loss (lower is better)", SeriesLabelPosition::UpperLeft);
        let accuracy_panel = ("Accuracy", SeriesLabelPosition::LowerRight);
        curve_panel(&left, &search, chosen, loss_panel, loss)?;
        curve_panel(&right, &search, chosen, accuracy_panel, accuracy)?;
        root.present().ok()?;
    }
    encode_png(pixels, width, height)
}

/// One panel of [`curves_png`]: `values` gives (training, validation) for each penalty.
fn curve_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    search: &[vision::PenaltyScore],
    chosen: f64,
    (title, legend): (&str, SeriesLabelPosition),
    values: impl Fn(&vision::PenaltyScore) -> (f64, f64),
) -> Option<()> {
    let first = search.first()?.penalty;
    let last = search.last()?.penalty;
    let (low, high) = if first < last {
        (first / 2.0, last * 2.0)
    } else {
        (first / 10.0, first * 10.0)
    };
    let top = search
        .iter()
        .map(|s| {
            let (t, v) = values(s);
            t.max(v)
        })
        .fold(0.0f64, f64::max)
        .max(1e-6)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 16))
        .margin(8)
        .x_label_area_size(38)
        .y_label_area_size(48)
        .build_cartesian_2d((low..high).log_scale(), 0.0..top)
        .ok()?;
    chart
        .configure_mesh()
        .x_desc("L2 penalty (log scale)")
        .x_label_formatter(&|v| format!("{v:.0e}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .light_line_style(WHITE)
        .draw()
        .ok()?;
    for (name, colour, pick) in [
        ("training folds", TRAINING, 0usize),
        ("validation folds", VALIDATION, 1),
    ] {
        let points: Vec<(f64, f64)> = search
            .iter()
            .map(|s| {
                let (t, v) = values(s);
                (s.penalty, if pick == 0 { t } else { v })
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .ok()?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, colour.filled())),
            )
            .ok()?;
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(chosen, 0.0), (chosen, top)],
            CHOSEN.stroke_width(1),
        )))
        .ok()?
        .label("chosen penalty")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], CHOSEN.stroke_width(1)));
    chart
        .configure_series_labels()
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(legend)
        .draw()
        .ok()?;
    Some(())
}

/// A PNG of the confusion matrix: true labels down the left, predictions along the bottom,
/// each cell with its count and shaded by the share of its row.
pub fn confusion_png(metrics: &Metrics) -> Option<Vec<u8>> {
    register_fonts();
    let evaluation = &metrics.evaluation;
    let classes = evaluation.labels.len();
    if classes == 0 || classes > MAX_MATRIX_LABELS {
        return None;
    }
    let cell = (360 / classes as u32).clamp(14, 60);
    // Room for the longest (shortened) label name, at ~8 px a character.
    let longest = evaluation
        .labels
        .iter()
        .map(|l| short(l).chars().count() as u32)
        .max()
        .unwrap_or(1);
    let (left_margin, bottom_margin) = ((24 + 8 * longest).max(90), 44 + 8 * longest);
    let width = left_margin + cell * classes as u32 + 20;
    let height = 40 + cell * classes as u32 + bottom_margin;
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let title = format!("Confusion matrix ({} images)", total(&evaluation.confusion));
        root.draw(&Text::new(title, (10, 6), (FONT, 15).into_font()))
            .ok()?;
        let font_size = f64::from(cell.clamp(10, 14));
        let origin = (left_margin as i32, 40i32);
        let side = cell as i32;
        for (t, row) in evaluation.confusion.iter().enumerate() {
            let row_total = row.iter().sum::<usize>().max(1);
            for (p, count) in row.iter().enumerate() {
                let share = *count as f64 / row_total as f64;
                let shade = (255.0 - 200.0 * share) as u8;
                let colour = if t == p {
                    RGBColor(shade, 255 - (55.0 * share) as u8, shade)
                } else {
                    RGBColor(255, shade, shade)
                };
                let x = origin.0 + p as i32 * side;
                let y = origin.1 + t as i32 * side;
                root.draw(&Rectangle::new(
                    [(x, y), (x + side, y + side)],
                    colour.filled(),
                ))
                .ok()?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + side, y + side)],
                    BLACK.mix(0.2),
                ))
                .ok()?;
                let text = count.to_string();
                let style = TextStyle::from((FONT, font_size).into_font()).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ),
                );
                root.draw(&Text::new(text, (x + side / 2, y + side / 2), style))
                    .ok()?;
            }
        }
        label_names(&root, &evaluation.labels, origin, side)?;
        let grey = BLACK.mix(0.7);
        let axis = TextStyle::from((FONT, 13).into_font()).color(&grey);
        root.draw(&Text::new("true label ↓", (8, 24), axis.clone()))
            .ok()?;
        root.draw(&Text::new(
            "predicted label →",
            (left_margin as i32, height as i32 - 18),
            axis,
        ))
        .ok()?;
        root.present().ok()?;
    }
    encode_png(pixels, width, height)
}

/// The label names beside the matrix's rows (true) and, turned, below its columns (predicted).
fn label_names(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    labels: &[String],
    origin: (i32, i32),
    side: i32,
) -> Option<()> {
    let label_style = TextStyle::from((FONT, 12).into_font());
    let row_style = label_style.pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Right,
        plotters::style::text_anchor::VPos::Center,
    ));
    let rotated = label_style.transform(FontTransform::Rotate90);
    let bottom = origin.1 + labels.len() as i32 * side + 6;
    for (i, label) in labels.iter().enumerate() {
        let y = origin.1 + i as i32 * side + side / 2;
        root.draw(&Text::new(
            short(label),
            (origin.0 - 6, y),
            row_style.clone(),
        ))
        .ok()?;
        let x = origin.0 + i as i32 * side + side / 2 - 6;
        root.draw(&Text::new(short(label), (x, bottom), rotated.clone()))
            .ok()?;
    }
    Some(())
}

fn total(confusion: &[Vec<usize>]) -> usize {
    confusion.iter().flatten().sum()
}

fn short(label: &str) -> String {
    if label.chars().count() <= LABEL_CHARS {
        label.to_owned()
    } else {
        let cut: String = label.chars().take(LABEL_CHARS - 1).collect();
        format!("{cut}…")
    }
}

fn encode_png(pixels: Vec<u8>, width: u32, height: u32) -> Option<Vec<u8>> {
    let image = image::RgbImage::from_raw(width, height, pixels)?;
    let mut png = std::io::Cursor::new(Vec::new());
    image.write_to(&mut png, image::ImageFormat::Png).ok()?;
    Some(png.into_inner())
}
