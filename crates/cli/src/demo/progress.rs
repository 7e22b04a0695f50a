//! What the demo shows while it runs: progress bars fed by the trainer's progress reports,
//! and lines printed above them.

use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pipeline::{ProgressObserver, TrainingProgress};

/// Bars for feature extraction and head training, fed by the trainer's progress reports.
#[derive(Clone)]
pub(super) struct TrainingBars {
    ui: MultiProgress,
    extraction: Arc<Mutex<Option<ProgressBar>>>,
    training: Arc<Mutex<Option<ProgressBar>>>,
}

impl TrainingBars {
    pub(super) fn new(ui: MultiProgress) -> Self {
        TrainingBars {
            ui,
            extraction: Arc::default(),
            training: Arc::default(),
        }
    }

    pub(super) fn observer(&self) -> ProgressObserver {
        let bars = self.clone();
        ProgressObserver(Arc::new(move |progress| bars.update(progress)))
    }

    fn update(&self, progress: TrainingProgress) {
        match progress {
            TrainingProgress::DatasetListed { total, cached } => {
                let bar = self.ui.add(bar(total as u64, "extract"));
                bar.set_position(cached as u64);
                replace(&self.extraction, bar);
            }
            TrainingProgress::ImageExtracted { done, .. } => {
                if let Some(bar) = current(&self.extraction) {
                    bar.set_position(done as u64);
                }
            }
            TrainingProgress::PenaltyScored {
                done,
                total,
                cv_accuracy,
            } => {
                let bar = match current(&self.training) {
                    Some(bar) => bar,
                    None => {
                        if let Some(extraction) = current(&self.extraction) {
                            extraction.finish();
                        }
                        let bar = self.ui.add(bar(total as u64, "train"));
                        replace(&self.training, bar.clone());
                        bar
                    }
                };
                bar.set_position(done as u64);
                bar.set_message(format!(
                    "penalty {done}/{total}: cross-validated accuracy {:.1} %",
                    cv_accuracy * 100.0
                ));
            }
        }
    }

    pub(super) fn finish(&self) {
        for slot in [&self.extraction, &self.training] {
            if let Some(bar) = current(slot) {
                bar.finish();
            }
        }
    }
}

fn current(slot: &Mutex<Option<ProgressBar>>) -> Option<ProgressBar> {
    slot.lock().ok().and_then(|bar| bar.clone())
}

fn replace(slot: &Mutex<Option<ProgressBar>>, bar: ProgressBar) {
    if let Ok(mut slot) = slot.lock()
        && let Some(old) = slot.replace(bar)
    {
        old.finish();
    }
}

pub(super) fn bar(length: u64, prefix: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(length).with_prefix(prefix);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {per_sec:>10} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Prints above the bars (or plainly when stderr is not a terminal).
pub(super) fn say(ui: &MultiProgress, line: String) {
    ui.suspend(|| eprintln!("{line}"));
}
