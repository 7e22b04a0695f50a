//! The report's inline chart: the penalty search on the left (cross-validated log-loss and
//! accuracy for each penalty, weakest penalty on the right), the confusion matrix on the right.
//! Drawn directly with the `image` crate: plotters would need system fonts for its axes, and
//! the email carries the numbers as text anyway.

use image::{Rgb, RgbImage};
use vision::Metrics;

const WIDTH: u32 = 720;
const HEIGHT: u32 = 300;
const PAD: u32 = 20;
const CHOSEN: Rgb<u8> = Rgb([31, 119, 180]);
const VALIDATION: Rgb<u8> = Rgb([255, 127, 14]);
const ACCURACY: Rgb<u8> = Rgb([44, 160, 44]);
const AXIS: Rgb<u8> = Rgb([120, 120, 120]);

/// A PNG of the penalty search and the confusion matrix.
pub fn render_png(metrics: &Metrics) -> Vec<u8> {
    let mut image = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb([255, 255, 255]));
    let plot = (PAD, PAD, WIDTH / 2 - 2 * PAD, HEIGHT - 2 * PAD);
    draw_axes(&mut image, plot);
    // `penalty_search` is strongest first, so the weakest penalty lands on the right, like a
    // training curve: fit grows left to right.
    let search = &metrics.penalty_search;
    let max_loss = search
        .iter()
        .map(|s| s.cv_log_loss as f32)
        .fold(f32::EPSILON, f32::max);
    let series: [(Rgb<u8>, Vec<f32>, f32); 2] = [
        (
            VALIDATION,
            search.iter().map(|s| s.cv_log_loss as f32).collect(),
            max_loss,
        ),
        (
            ACCURACY,
            search.iter().map(|s| s.cv_accuracy as f32).collect(),
            1.0,
        ),
    ];
    let x_of = |i: usize| plot.0 + (i as u32 * plot.2) / (search.len().max(2) as u32 - 1);
    for (colour, values, max) in series {
        let points: Vec<(i64, i64)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let y = plot.1 + plot.3 - ((v / max).clamp(0.0, 1.0) * plot.3 as f32) as u32;
                (i64::from(x_of(i)), i64::from(y))
            })
            .collect();
        for pair in points.windows(2) {
            draw_line(&mut image, pair[0], pair[1], colour);
        }
    }
    // A vertical marker at the chosen penalty.
    if let Some(chosen) = search
        .iter()
        .position(|s| s.penalty == metrics.chosen_penalty.penalty)
    {
        let x = i64::from(x_of(chosen));
        draw_line(
            &mut image,
            (x, i64::from(plot.1)),
            (x, i64::from(plot.1 + plot.3)),
            CHOSEN,
        );
    }

    let confusion = &metrics.evaluation.confusion;
    let classes = confusion.len().max(1) as u32;
    let side = (HEIGHT - 2 * PAD).min(WIDTH / 2 - 2 * PAD);
    let cell = (side / classes).max(1);
    let origin = (WIDTH / 2 + PAD, PAD);
    for (t, row) in confusion.iter().enumerate() {
        let total: usize = row.iter().sum::<usize>().max(1);
        for (p, count) in row.iter().enumerate() {
            let shade = 255 - (200.0 * *count as f32 / total as f32) as u8;
            let colour = Rgb([shade, shade, 255]);
            for y in 0..cell.saturating_sub(1) {
                for x in 0..cell.saturating_sub(1) {
                    image.put_pixel(
                        origin.0 + p as u32 * cell + x,
                        origin.1 + t as u32 * cell + y,
                        colour,
                    );
                }
            }
        }
    }
    let mut png = std::io::Cursor::new(Vec::new());
    // Encoding an in-memory RGB image to PNG cannot fail for these sizes.
    let _ = image.write_to(&mut png, image::ImageFormat::Png);
    png.into_inner()
}

fn draw_axes(image: &mut RgbImage, (x, y, w, h): (u32, u32, u32, u32)) {
    for i in 0..=w {
        image.put_pixel(x + i, y + h, AXIS);
    }
    for j in 0..=h {
        image.put_pixel(x, y + j, AXIS);
    }
}

fn draw_line(image: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), colour: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut error) = (x0, y0, dx + dy);
    loop {
        for (ox, oy) in [(0, 0), (0, 1), (1, 0)] {
            let (px, py) = (x + ox, y + oy);
            if px >= 0 && py >= 0 && (px as u32) < image.width() && (py as u32) < image.height() {
                image.put_pixel(px as u32, py as u32, colour);
            }
        }
        if x == x1 && y == y1 {
            break;
        }
        let doubled = 2 * error;
        if doubled >= dy {
            error += dy;
            x += sx;
        }
        if doubled <= dx {
            error += dx;
            y += sy;
        }
    }
}
