//! Hostile files through the real handler path: each upload of the corpus gets a prediction or
//! an error document naming the problem, nothing panics, and the handler's peak heap stays
//! bounded. The same corpus inside a training dataset is skipped and listed, and the job still
//! succeeds. This file is its own test binary, so its allocation counter sees only this work.

mod common;
#[path = "../../vision/tests/support/peak_heap.rs"]
mod peak_heap;

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{INPUT, LocalStack, NoLauncher, RESULTS, fixture};
use image::{DynamicImage, ImageFormat};
use peak_heap::{CURRENT, PEAK};
use pipeline::documents::JobStatus;
use pipeline::documents::PredictionDocument;
use pipeline::event::object_created_event;
use pipeline::{S3Event, Trainer, TrainerEvent, TrainerOptions, TrainerOutcome, UploadTrigger};

#[global_allocator]
static ALLOCATOR: peak_heap::PeakCounter = peak_heap::PeakCounter;

const MIB: usize = 1024 * 1024;

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// A real PNG of `width × height` grey pixels, written row by row (never a full buffer here).
fn streamed_png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().unwrap();
        let mut stream = writer.stream_writer().unwrap();
        let row = vec![128u8; width as usize];
        for _ in 0..height {
            std::io::Write::write_all(&mut stream, &row).unwrap();
        }
        stream.finish().unwrap();
        writer.finish().unwrap();
    }
    bytes
}

/// `png` with its IHDR rewritten to declare `width × height` (CRC fixed, so only size is wrong).
fn png_declaring(png: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png.to_vec();
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32fast::hash(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// `jpeg` with its SOF0 frame header rewritten to declare `width × height`.
fn jpeg_declaring(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg.to_vec();
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("a baseline JPEG");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

/// The error kinds a file may get, or `None` when it must classify.
type Expected = Option<&'static [&'static str]>;

/// `(file name, bytes, expected)`.
fn corpus() -> Vec<(&'static str, Vec<u8>, Expected)> {
    let chelsea_jpg = fixture("chelsea.jpg");
    let palette_png = fixture("chelsea_palette.png");
    let small = DynamicImage::ImageRgb8(image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([x as u8 * 4, y as u8 * 5, 90])
    }));
    let mut bad_crc = palette_png.clone();
    bad_crc[30] ^= 0xff;
    let mut random = vec![0u8; 4096];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in &mut random {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let mut gif = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
        let frames = [[200u8, 30, 30, 255], [30, 30, 200, 255]].map(|colour| {
            image::Frame::new(image::RgbaImage::from_pixel(40, 30, image::Rgba(colour)))
        });
        encoder.encode_frames(frames).unwrap();
    }
    let bad: fn(&'static [&'static str]) -> Expected = Some;
    vec![
        ("zero-bytes.jpg", Vec::new(), bad(&["empty"])),
        (
            "truncated.jpg",
            chelsea_jpg[..chelsea_jpg.len() / 2].to_vec(),
            bad(&["truncated", "corrupt"]),
        ),
        (
            "truncated.png",
            palette_png[..palette_png.len() / 2].to_vec(),
            bad(&["truncated", "corrupt"]),
        ),
        ("random.jpg", random, bad(&["unsupported_format"])),
        (
            "page.jpg",
            b"<!DOCTYPE html><html><body>hi</body></html>".to_vec(),
            bad(&["unsupported_format"]),
        ),
        (
            "drawing.png",
            br#"<svg xmlns="http://www.w3.org/2000/svg"/>"#.to_vec(),
            bad(&["unsupported_format"]),
        ),
        (
            "notes.jpeg",
            b"just some text, not a picture\n".to_vec(),
            bad(&["unsupported_format"]),
        ),
        (
            "giga.png",
            png_declaring(&palette_png, 100_000, 100_000),
            bad(&["limit_exceeded"]),
        ),
        (
            "giga.jpg",
            jpeg_declaring(&chelsea_jpg, 65_500, 65_500),
            bad(&["limit_exceeded"]),
        ),
        (
            "real-12000x12000.png",
            streamed_png(12_000, 12_000),
            bad(&["limit_exceeded"]),
        ),
        (
            "tall-1x20000.png",
            streamed_png(1, 20_000),
            bad(&["limit_exceeded"]),
        ),
        (
            "wide-20000x1.png",
            streamed_png(20_000, 1),
            bad(&["limit_exceeded"]),
        ),
        ("bad-crc.png", bad_crc, bad(&["corrupt"])),
        ("animated.gif", gif, None),
        (
            "sixteen-bit.png",
            encode(DynamicImage::ImageRgb16(small.to_rgb16()), ImageFormat::Png),
            None,
        ),
        ("cmyk.jpg", fixture("chelsea_cmyk.jpg"), None),
        ("palette.png", palette_png.clone(), None),
        (
            "gray-alpha.png",
            encode(
                DynamicImage::ImageLumaA8(small.to_luma_alpha8()),
                ImageFormat::Png,
            ),
            None,
        ),
        ("exif-rotated.jpg", fixture("chelsea_exif6.jpg"), None),
        ("png-named.jpg", palette_png, None),
        ("progressive.jpg", fixture("coffee_progressive.jpg"), None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_uploads_get_documents_and_hostile_datasets_still_train() {
    // `stack` keeps the scratch folder until the test ends.
    let stack = LocalStack::start().await;
    let (server, store, config) = (stack.server, stack.store, stack.config);
    let backbone = Arc::new(vision::Backbone::bundled().unwrap());
    let trigger = UploadTrigger::new(
        config.clone(),
        store.clone(),
        Arc::new(NoLauncher),
        backbone.clone(),
    );

    // Warm up (model planned, current.json absent), so peaks below measure one image each.
    let warm_up = fixture("chelsea.jpg");
    let etag = store
        .put(INPUT, "images/warm-up.jpg", warm_up.clone(), "image/jpeg")
        .await
        .unwrap()
        .unwrap();
    let event = object_created_event(
        "us-east-1",
        INPUT,
        "images/warm-up.jpg",
        warm_up.len() as u64,
        &etag,
        0,
    );
    trigger
        .handle(&serde_json::from_value::<S3Event>(event).unwrap())
        .await
        .unwrap();

    let corpus = corpus();
    let mut worst = (0usize, "");
    for (sequencer, (name, bytes, expected)) in corpus.iter().enumerate() {
        let key = format!("images/hostile/{name}");
        let etag = store
            .put(INPUT, &key, bytes.clone(), "application/octet-stream")
            .await
            .unwrap()
            .unwrap();
        let event = object_created_event(
            "us-east-1",
            INPUT,
            &key,
            bytes.len() as u64,
            &etag,
            sequencer as u64 + 1,
        );
        let event: S3Event = serde_json::from_value(event).unwrap();
        let baseline = CURRENT.load(Ordering::SeqCst);
        PEAK.store(baseline, Ordering::SeqCst);
        let outcomes = trigger
            .handle(&event)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let growth = PEAK.load(Ordering::SeqCst).saturating_sub(baseline);
        if growth > worst.0 {
            worst = (growth, name);
        }
        assert_eq!(outcomes.len(), 1, "{name}: {outcomes:?}");
        let document = store
            .get(RESULTS, &format!("predictions/hostile/{name}.json"))
            .await
            .unwrap();
        let document: PredictionDocument = serde_json::from_slice(&document.bytes).unwrap();
        match expected {
            None => {
                assert!(document.error.is_none(), "{name}: {:?}", document.error);
                assert_eq!(document.top.len(), 5, "{name}");
            }
            Some(kinds) => {
                let error = document
                    .error
                    .unwrap_or_else(|| panic!("{name} was classified"));
                assert!(
                    kinds.contains(&error.kind.as_str()),
                    "{name}: {} ({})",
                    error.kind,
                    error.message
                );
                assert!(!error.message.is_empty());
            }
        }
    }
    eprintln!(
        "hostile uploads: {} files, worst peak heap growth in one invocation {:.1} MiB ({})",
        corpus.len(),
        worst.0 as f64 / MIB as f64,
        worst.1
    );
    // One image at a time, bounded by the decode limits (96 MiB decoded at most), never by what
    // a header claims; this corpus stays far below that.
    assert!(worst.0 < 64 * MIB, "{} MiB for {}", worst.0 / MIB, worst.1);

    // The same corpus as training data, beside enough good images: skipped, listed, trained.
    let good = [
        ("cat", "chelsea.jpg"),
        ("cat", "chelsea_256.png"),
        ("coffee", "coffee.jpg"),
        ("coffee", "astronaut.jpg"),
    ];
    for (label, name) in good {
        store
            .put(
                INPUT,
                &format!("datasets/hostile/{label}/{name}"),
                fixture(name),
                "image/jpeg",
            )
            .await
            .unwrap();
    }
    for (index, (name, bytes, _)) in corpus.iter().enumerate() {
        let label = ["cat", "coffee"][index % 2];
        store
            .put(
                INPUT,
                &format!("datasets/hostile/{label}/{name}"),
                bytes.clone(),
                "image/jpeg",
            )
            .await
            .unwrap();
    }
    let spec = serde_json::json!({"dataset": "hostile", "min_images_per_class": 2, "validation_split": 0.25});
    store
        .put(
            INPUT,
            "jobs/hostile.json",
            spec.to_string().into_bytes(),
            "application/json",
        )
        .await
        .unwrap();
    let trainer = Trainer::new(
        config,
        store.clone(),
        Arc::new(NoLauncher),
        backbone,
        TrainerOptions::default(),
    );
    let event = TrainerEvent {
        job_id: "hostile".to_owned(),
        continuation: 0,
    };
    let TrainerOutcome::Finished(result) = trainer
        .handle(&event, Instant::now() + Duration::from_secs(600))
        .await
        .unwrap()
    else {
        panic!("the job did not finish");
    };
    assert_eq!(result.status, JobStatus::Succeeded, "{result:?}");
    let metrics: vision::Metrics = serde_json::from_slice(
        &store
            .get(RESULTS, "models/hostile/metrics.json")
            .await
            .unwrap()
            .bytes,
    )
    .unwrap();
    let bad: Vec<&str> = corpus
        .iter()
        .filter(|(_, _, e)| e.is_some())
        .map(|(n, _, _)| *n)
        .collect();
    assert_eq!(metrics.skipped.len(), bad.len(), "{:?}", metrics.skipped);
    for name in bad {
        let skipped = metrics
            .skipped
            .iter()
            .find(|s| s.key.ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("{name} is not listed as skipped"));
        assert!(!skipped.reason.is_empty());
    }
    let usable = good.len() + corpus.len() - metrics.skipped.len();
    assert_eq!(metrics.images.train + metrics.images.validation, usable);
    drop(server);
}
