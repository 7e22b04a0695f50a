//! Head training's memory beyond the features: the penalty search's bounded copy of the rows
//! and, per label, the solver state of each fit running at once. The budget the trainer's
//! memory rule uses for the latter (`vision::head::SOLVER_BYTES_PER_LABEL`) is checked here,
//! on 200 labels, where the solver's state dwarfs the features.
//! Its own test binary, so the allocation counter sees only this work.

#[path = "support/peak_heap.rs"]
mod peak_heap;

use std::sync::atomic::Ordering;

use peak_heap::{CURRENT, PEAK};
use vision::head::{SOLVER_BYTES_PER_LABEL, train_head_on};
use vision::{FEATURE_LEN, FeatureSet, TrainConfig};

#[global_allocator]
static ALLOCATOR: peak_heap::PeakCounter = peak_heap::PeakCounter;

#[test]
fn the_solver_state_per_label_is_within_the_trainers_budget() {
    const LABELS: usize = 200;
    const PER_LABEL: usize = 10;
    const THREADS: usize = 2;
    // Each label a direction of its own, with a little per-image variation: separable, so
    // every fit runs to its iteration limit without numerical trouble.
    let mut set = FeatureSet::default();
    for label in 0..LABELS {
        for image in 0..PER_LABEL {
            let row: Vec<f32> = (0..FEATURE_LEN)
                .map(|d| {
                    let centre = if d % LABELS == label { 3.0 } else { 0.5 };
                    centre + ((d * 31 + image * 17 + label * 7) % 13) as f32 * 0.05
                })
                .collect();
            set.push(format!("{label}/{image}"), format!("label-{label}"), &row);
        }
    }
    let config = TrainConfig {
        penalties: vec![0.1],
        max_iterations: 20,
        min_images_per_class: 2,
        ..TrainConfig::default()
    };
    let before = CURRENT.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let trained = train_head_on(&set, &config, THREADS, |_| {}).unwrap();
    let growth = PEAK.load(Ordering::SeqCst) - before;
    assert!(
        trained.split.train.len() >= FEATURE_LEN,
        "the final fits read in place"
    );
    let features = set.features.len() * 4;
    let budget = features + LABELS * THREADS * SOLVER_BYTES_PER_LABEL as usize;
    eprintln!(
        "peak heap growth {:.1} MiB: {:.1} MiB of features (the search's copy), {:.2} MiB per label and fit at once (budget {:.2})",
        growth as f64 / 1048576.0,
        features as f64 / 1048576.0,
        (growth - features.min(growth)) as f64 / (LABELS * THREADS) as f64 / 1048576.0,
        SOLVER_BYTES_PER_LABEL as f64 / 1048576.0
    );
    assert!(
        growth < budget,
        "peak heap growth {growth} bytes over the budget of {budget}"
    );
}
