//! The trainable part: multinomial logistic regression on standardised frozen MobileNetV2
//! features — a convex problem, so it is solved to convergence (L-BFGS, see [`logistic`]) rather
//! than trained for epochs. The L2 penalty is chosen by stratified k-fold cross-validation on the
//! training split, warm-started from the strongest penalty to the weakest; the head is then
//! refitted on the whole training split, scored on the held-out validation split, and (by
//! default) refitted once more on every labelled image.
//!
//! Bit-reproducible from a seed: the split and the folds come from a seeded ChaCha shuffle, and
//! every fit runs on one thread in a fixed order, whichever thread runs it.

mod basis;
mod block;
mod design;
mod logistic;
mod search;
mod split;
#[cfg(test)]
mod tests;

use ndarray::{Array2, ArrayView2, s};
use serde::{Deserialize, Serialize};

use crate::backbone::FEATURE_LEN;
use crate::error::{Result, VisionError};
use crate::extract::FeatureSet;
use block::{Block, Standardisation};
use design::OrderedRows;
use logistic::Problem;
use search::{CrossValidation, mean_params};
pub use split::{Split, label_targets, stratified_folds, stratified_split};

/// Training settings: the one definition of the hyper-parameters and their defaults. The job
/// spec takes them as fields (`"folds": 5`), `lambda-vision train` as flags (`--folds 5`; with
/// feature `clap`), and both check them with [`TrainConfig::validate`]. The defaults need no
/// tuning: the penalty grid spans seven decades and cross-validation picks from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct TrainConfig {
    /// L2 penalty strengths to choose from (λ in mean cross-entropy + λ/2·‖W‖² on standardised
    /// features): 1–20 values in (0, 100]. Default one per decade from 1e-6 to 1.
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ',', num_args = 1.., default_values_t = DEFAULT_PENALTIES, hide_default_value = true))]
    pub penalties: Vec<f64>,
    /// Cross-validation folds on the training split (2–20, default 5).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().folds, hide_default_value = true))]
    pub folds: usize,
    /// L-BFGS iterations allowed per fit (10–10000, default 500); fits usually converge sooner.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().max_iterations, hide_default_value = true))]
    pub max_iterations: usize,
    /// Fraction of each class held out to score the model (0–0.5, default 0.2).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().validation_split, hide_default_value = true))]
    pub validation_split: f32,
    /// After scoring, refit on the training and validation images together with the chosen
    /// penalty, so the model learns from every labelled image (default). `false` in a job spec,
    /// `--no-refit` on the command line, ships exactly the model that was scored.
    #[cfg_attr(feature = "clap", arg(long = "no-refit", action = clap::ArgAction::SetFalse))]
    pub refit_with_validation: bool,
    /// Seed for the split and the folds: same data + same seed → identical weights (default 42).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().seed, hide_default_value = true))]
    pub seed: u64,
    /// Fewest usable images a class may end with (1–10000, default 5).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().min_images_per_class, hide_default_value = true))]
    pub min_images_per_class: usize,
    /// One confidence threshold (0–1) for every label, instead of each label's own: the score
    /// that gave the label its best F1 on the validation split (the default, unset). A top
    /// label scoring below its threshold marks the prediction as not confident.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f32>,
}

/// Most training images the penalty search fits on. Larger training sets are sampled (stratified,
/// seeded) for the search, and the final fits use every image: the search's cost stays bounded
/// (~20 s on 2 vCPUs) while the choice of penalty barely moves at that size.
pub const CV_MAX_IMAGES: usize = 10_000;

/// Memory one running fit holds per label: L-BFGS's 20 history vectors and its working copies
/// of the parameters (`FEATURE_LEN + 1` f64 per label), about 40 in all. The trainer budgets
/// it for each fold fitted at once; `tests/head_memory.rs` measures ~36 and holds the budget.
pub const SOLVER_BYTES_PER_LABEL: u64 = 40 * (FEATURE_LEN as u64 + 1) * 8;

/// One value per decade from 1e-6 to 1.
pub const DEFAULT_PENALTIES: [f64; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            penalties: DEFAULT_PENALTIES.to_vec(),
            folds: 5,
            max_iterations: 500,
            validation_split: 0.2,
            refit_with_validation: true,
            seed: 42,
            min_images_per_class: 5,
            min_confidence: None,
        }
    }
}

impl TrainConfig {
    /// Checks every field's range, naming the first field that is out of it.
    pub fn validate(&self) -> Result<()> {
        let invalid =
            |field: &'static str, reason: String| Err(VisionError::InvalidConfig { field, reason });
        if !(1..=20).contains(&self.penalties.len()) {
            return invalid(
                "penalties",
                format!("{} values given, 1–20 allowed", self.penalties.len()),
            );
        }
        if let Some(bad) = self.penalties.iter().find(|p| !(**p > 0.0 && **p <= 100.0)) {
            return invalid("penalties", format!("{bad} is outside (0, 100]"));
        }
        if !(2..=20).contains(&self.folds) {
            return invalid("folds", format!("{} is outside 2–20", self.folds));
        }
        if !(10..=10_000).contains(&self.max_iterations) {
            return invalid(
                "max_iterations",
                format!("{} is outside 10–10000", self.max_iterations),
            );
        }
        if !(0.0..=0.5).contains(&self.validation_split) {
            return invalid(
                "validation_split",
                format!("{} is outside 0–0.5", self.validation_split),
            );
        }
        if !(1..=10_000).contains(&self.min_images_per_class) {
            return invalid(
                "min_images_per_class",
                format!("{} is outside 1–10000", self.min_images_per_class),
            );
        }
        if let Some(bad) = self.min_confidence.filter(|m| !(0.0..=1.0).contains(m)) {
            return invalid("min_confidence", format!("{bad} is outside 0–1"));
        }
        Ok(())
    }
}

/// A trained softmax layer over standardised features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub labels: Vec<String>,
    /// Per-feature mean and standard deviation of the training split; features are
    /// standardised with them before the linear layer.
    pub feature_mean: Vec<f32>,
    pub feature_std: Vec<f32>,
    /// One row of `FEATURE_LEN` weights per label.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

impl Head {
    /// Checks the shapes of a head read from a file.
    pub fn validate(&self) -> Result<()> {
        let classes = self.labels.len();
        let ok = classes >= 2
            && self.bias.len() == classes
            && self.weights.len() == classes
            && self.weights.iter().all(|row| row.len() == FEATURE_LEN)
            && self.feature_mean.len() == FEATURE_LEN
            && self.feature_std.len() == FEATURE_LEN
            && self.feature_std.iter().all(|s| *s > 0.0);
        if ok {
            Ok(())
        } else {
            Err(VisionError::InvalidHead(format!(
                "expected ≥ 2 labels, {classes} weight rows of {FEATURE_LEN}, {classes} biases and {FEATURE_LEN} positive standard deviations"
            )))
        }
    }

    /// Class scores (before softmax) for one feature vector.
    pub fn logits(&self, features: &[f32]) -> Vec<f32> {
        let standardised: Vec<f32> = features
            .iter()
            .zip(self.feature_mean.iter().zip(&self.feature_std))
            .map(|(x, (mean, std))| (x - mean) / std)
            .collect();
        self.weights
            .iter()
            .zip(&self.bias)
            .map(|(row, bias)| bias + dot(row, &standardised))
            .collect()
    }

    /// The most likely label index for one feature vector.
    pub fn predict(&self, features: &[f32]) -> usize {
        argmax(&self.logits(features))
    }

    /// Weights and bias with the standardisation folded in (`W' = W / std`,
    /// `b' = b − W'·mean`), so the head is a single matrix multiply in exported models.
    pub fn folded(&self) -> (Vec<f32>, Vec<f32>) {
        let mut weights = Vec::with_capacity(self.labels.len() * FEATURE_LEN);
        let mut bias = Vec::with_capacity(self.labels.len());
        for (row, b) in self.weights.iter().zip(&self.bias) {
            let mut shift = 0.0f64;
            for ((w, mean), std) in row.iter().zip(&self.feature_mean).zip(&self.feature_std) {
                let folded = w / std;
                shift += f64::from(folded) * f64::from(*mean);
                weights.push(folded);
            }
            bias.push((f64::from(*b) - shift) as f32);
        }
        (weights, bias)
    }
}

/// How well one penalty strength did in cross-validation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PenaltyScore {
    pub penalty: f64,
    /// Share of held-out fold images classified correctly, pooled over the folds.
    pub cv_accuracy: f64,
    /// Mean cross-entropy on the held-out fold images; the penalty with the lowest wins.
    pub cv_log_loss: f64,
    /// The same two figures on the images each fold was fitted on (pooled over the folds):
    /// the training curve beside the validation one. Zero in metrics written before they were.
    #[serde(default)]
    pub train_accuracy: f64,
    #[serde(default)]
    pub train_log_loss: f64,
    /// L-BFGS iterations over all folds.
    pub iterations: usize,
}

/// How the final fit ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SolverReport {
    pub iterations: usize,
    /// False when `max_iterations` stopped the fit before the gradient vanished.
    pub converged: bool,
}

/// The outcome of [`train_head`].
#[derive(Debug, Clone)]
pub struct TrainedHead {
    /// The head to ship: refitted on every labelled image when `refit_with_validation` is set,
    /// else the same as `scored_head`.
    pub head: Head,
    /// The head fitted on the training split only, which the validation split scores.
    pub scored_head: Head,
    /// Every penalty tried, strongest first.
    pub penalty_scores: Vec<PenaltyScore>,
    pub chosen: PenaltyScore,
    pub solver: SolverReport,
    /// True when `head` was refitted on the validation images too.
    pub refitted_with_validation: bool,
    pub split: Split,
    /// Label index of every row of the feature set.
    pub targets: Vec<usize>,
}

/// Trains a head on `set` (see the module documentation), reporting each penalty's
/// cross-validation score as it is known.
///
/// Fails when there are fewer than two labels, or a label has fewer usable images than
/// `config.min_images_per_class`.
pub fn train_head(
    set: &FeatureSet,
    config: &TrainConfig,
    on_penalty: impl FnMut(&PenaltyScore),
) -> Result<TrainedHead> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    train_head_on(set, config, threads, on_penalty)
}

/// [`train_head`] with the folds spread over `threads` threads; the result does not depend on it.
pub fn train_head_on(
    set: &FeatureSet,
    config: &TrainConfig,
    threads: usize,
    on_penalty: impl FnMut(&PenaltyScore),
) -> Result<TrainedHead> {
    train_with_search_limit(set, config, threads, CV_MAX_IMAGES, on_penalty)
}

/// The training itself, with the penalty search limited to `search_limit` training images
/// ([`CV_MAX_IMAGES`] outside tests, which lower it to exercise the sampling).
fn train_with_search_limit(
    set: &FeatureSet,
    config: &TrainConfig,
    threads: usize,
    search_limit: usize,
    mut on_penalty: impl FnMut(&PenaltyScore),
) -> Result<TrainedHead> {
    config.validate()?;
    if set.labels.len() != set.len() || set.features.len() != set.len() * FEATURE_LEN {
        return Err(VisionError::HeadTraining(format!(
            "the feature set has {} keys, {} labels and {} feature values: one label and {FEATURE_LEN} values per key expected",
            set.len(),
            set.labels.len(),
            set.features.len()
        )));
    }
    let (labels, targets) = label_targets(&set.labels);
    check_label_counts(&labels, &targets, config.min_images_per_class)?;
    let classes = labels.len();
    let split = stratified_split(&targets, classes, config.validation_split, config.seed);
    let mut rows = OrderedRows::new(set, &split, &targets, classes, config, search_limit);

    // Fewer images than features: fit on exact coordinates in the span of the images.
    let basis = rows.basis();
    let (searched_rows, searched_targets) = rows.searched();
    let search = CrossValidation {
        design: basis.as_ref().map_or(searched_rows, |b| {
            b.coordinates.slice(s![..searched_rows.nrows(), ..])
        }),
        targets: searched_targets,
        classes,
        fold_bounds: rows.fold_bounds.clone(),
        max_iterations: config.max_iterations,
        threads,
    };
    let (penalty_scores, chosen, fold_params) = search.run(&config.penalties, &mut on_penalty)?;

    // The final fits read the features in place, standardised on the fly: the copy is needed
    // no more unless the head is mapped back from the basis.
    if basis.is_none() {
        rows.rows = Array2::zeros((0, FEATURE_LEN));
    }
    let features = ArrayView2::from_shape((set.len(), FEATURE_LEN), &set.features)
        .map_err(|e| VisionError::HeadTraining(format!("the feature matrix: {e}")))?;
    let standardisation = Standardisation {
        mean: &rows.feature_mean,
        std: &rows.feature_std,
    };
    // `split.train` is sorted, so the fit reads the features front to back.
    let train_targets: Vec<usize> = split.train.iter().map(|&r| targets[r]).collect();
    let start = mean_params(&fold_params);
    let fit = match &basis {
        Some(basis) => Problem::new(basis.coordinates.view(), &rows.targets, classes),
        None => Problem {
            blocks: vec![Block {
                matrix: features,
                picked: Some(&split.train),
                targets: &train_targets,
            }],
            classes,
            standardisation: Some(standardisation),
        },
    }
    .fit(chosen.penalty, start.as_deref(), config.max_iterations)?;
    let scored_head = rows.head(&fit.params, basis.as_ref(), &labels)?;
    let mut solver = SolverReport {
        iterations: fit.iterations,
        converged: fit.converged,
    };

    let refitted_with_validation = config.refit_with_validation && !split.validation.is_empty();
    let head = if refitted_with_validation {
        // Same standardisation and the same penalty, on every image; warm-started from the
        // scored head, so this costs a fraction of the first fit.
        let mut start: Vec<f64> = scored_head
            .weights
            .iter()
            .flatten()
            .map(|&w| f64::from(w))
            .collect();
        start.extend(scored_head.bias.iter().map(|&b| f64::from(b)));
        let every_image = Problem {
            blocks: vec![Block::whole(features, &targets)],
            classes,
            standardisation: Some(standardisation),
        };
        let refit = every_image.fit(chosen.penalty, Some(&start), config.max_iterations)?;
        solver.iterations += refit.iterations;
        solver.converged &= refit.converged;
        rows.head(&refit.params, None, &labels)?
    } else {
        scored_head.clone()
    };

    Ok(TrainedHead {
        head,
        scored_head,
        penalty_scores,
        chosen,
        solver,
        refitted_with_validation,
        split,
        targets,
    })
}

/// At least two labels, each with at least `minimum` usable images.
fn check_label_counts(labels: &[String], targets: &[usize], minimum: usize) -> Result<()> {
    if labels.len() < 2 {
        return Err(VisionError::NotEnoughLabels {
            found: labels.to_vec(),
        });
    }
    for (class, label) in labels.iter().enumerate() {
        let usable = targets.iter().filter(|&&t| t == class).count();
        if usable < minimum {
            return Err(VisionError::TooFewImages {
                label: label.clone(),
                usable,
                minimum,
            });
        }
    }
    Ok(())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise while keeping a fixed order.
    let mut lanes = [0.0f32; 8];
    let (a_chunks, a_rest) = a.as_chunks::<8>();
    let (b_chunks, b_rest) = b.as_chunks::<8>();
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

/// Index of the largest value; the first one on ties.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}
