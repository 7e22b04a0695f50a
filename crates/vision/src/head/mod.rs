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
mod logistic;

use ndarray::{Array2, ArrayView2, s};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::backbone::FEATURE_LEN;
use crate::error::{Result, VisionError};
use crate::extract::FeatureSet;
use basis::RowBasis;
use logistic::Problem;

/// Training settings. The defaults need no tuning: the penalty grid spans seven decades and
/// cross-validation picks from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// L2 penalty strengths to choose from (λ in mean cross-entropy + λ/2·‖W‖² on standardised
    /// features): 1–20 values in (0, 100]. Default one per decade from 1e-6 to 1.
    pub penalties: Vec<f64>,
    /// Cross-validation folds on the training split (2–20, default 5).
    pub folds: usize,
    /// L-BFGS iterations allowed per fit (10–10000, default 500); fits usually converge sooner.
    pub max_iterations: usize,
    /// Fraction of each class held out to score the model (0–0.5, default 0.2).
    pub validation_split: f32,
    /// After scoring, refit on the training and validation images together with the chosen
    /// penalty (default true), so the model learns from every labelled image. False keeps
    /// exactly the model that was scored.
    pub refit_with_validation: bool,
    /// Seed for the split and the folds: same data + same seed → identical weights.
    pub seed: u64,
    /// Fewest usable images a class may end with (1–10000, default 5).
    pub min_images_per_class: usize,
}

/// Most training images the penalty search fits on. Larger training sets are sampled (stratified,
/// seeded) for the search, and the final fits use every image: the search's cost stays bounded
/// (~20 s on 2 vCPUs) while the choice of penalty barely moves at that size.
pub const CV_MAX_IMAGES: usize = 10_000;

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

/// Which rows of a [`FeatureSet`] train and which validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
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

/// Sorted distinct labels and each row's index into them.
pub fn label_targets(labels: &[String]) -> (Vec<String>, Vec<usize>) {
    let mut names: Vec<String> = labels.to_vec();
    names.sort();
    names.dedup();
    let targets = labels
        .iter()
        .map(|label| names.binary_search(label).unwrap_or_default())
        .collect();
    (names, targets)
}

/// Holds out `fraction` of every class (rounded, at least one image when the class has two or
/// more and the fraction is positive), chosen by a seeded shuffle.
pub fn stratified_split(targets: &[usize], classes: usize, fraction: f32, seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = Split {
        train: Vec::new(),
        validation: Vec::new(),
    };
    for class in 0..classes {
        let mut members: Vec<usize> = (0..targets.len())
            .filter(|&i| targets[i] == class)
            .collect();
        members.shuffle(&mut rng);
        let mut held = (members.len() as f32 * fraction).round() as usize;
        if fraction > 0.0 && held == 0 && members.len() >= 2 {
            held = 1;
        }
        held = held.min(members.len().saturating_sub(1));
        split.validation.extend_from_slice(&members[..held]);
        split.train.extend_from_slice(&members[held..]);
    }
    split.train.sort_unstable();
    split.validation.sort_unstable();
    split
}

/// Assigns every training row a fold (`0..folds`): each class is shuffled with the seed and
/// dealt round-robin, continuing where the previous class stopped, so folds stay within one
/// image of each other in size and in every class.
pub fn stratified_folds(targets: &[usize], classes: usize, folds: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00f0_1d5e_ed00);
    let mut fold_of = vec![0; targets.len()];
    let mut dealt = 0;
    for class in 0..classes {
        let mut members: Vec<usize> = (0..targets.len())
            .filter(|&i| targets[i] == class)
            .collect();
        members.shuffle(&mut rng);
        for row in members {
            fold_of[row] = dealt % folds;
            dealt += 1;
        }
    }
    fold_of
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
    let (labels, targets) = label_targets(&set.labels);
    if labels.len() < 2 {
        return Err(VisionError::NotEnoughLabels {
            found: labels.clone(),
        });
    }
    for (class, label) in labels.iter().enumerate() {
        let usable = targets.iter().filter(|&&t| t == class).count();
        if usable < config.min_images_per_class {
            return Err(VisionError::TooFewImages {
                label: label.clone(),
                usable,
                minimum: config.min_images_per_class,
            });
        }
    }
    let classes = labels.len();
    let split = stratified_split(&targets, classes, config.validation_split, config.seed);
    let (feature_mean, feature_std) = standardisation(set, &split.train);

    // One standardised f32 copy of the features, ordered so that every block a fit needs is
    // contiguous: the training rows grouped by fold, then the validation rows.
    let train_targets_unordered: Vec<usize> = split.train.iter().map(|&r| targets[r]).collect();
    let mut fold_of =
        stratified_folds(&train_targets_unordered, classes, config.folds, config.seed);
    // Past the search limit, the search sees a stratified, seeded sample; the rest sort last
    // (as fold number `folds`) and join only the final fits.
    if split.train.len() > search_limit {
        let fraction = 1.0 - search_limit as f32 / split.train.len() as f32;
        let left_out = stratified_split(
            &train_targets_unordered,
            classes,
            fraction,
            config.seed.wrapping_add(1),
        );
        for position in left_out.validation {
            fold_of[position] = config.folds;
        }
    }
    let mut train_order: Vec<(usize, usize)> = split
        .train
        .iter()
        .zip(&fold_of)
        .map(|(&row, &fold)| (fold, row))
        .collect();
    train_order.sort_unstable();
    let mut fold_bounds = vec![0; config.folds + 1];
    for &(fold, _) in &train_order {
        if fold < config.folds {
            fold_bounds[fold + 1] += 1;
        }
    }
    for fold in 0..config.folds {
        fold_bounds[fold + 1] += fold_bounds[fold];
    }
    let order: Vec<usize> = train_order
        .iter()
        .map(|&(_, row)| row)
        .chain(split.validation.iter().copied())
        .collect();
    let ordered_targets: Vec<usize> = order.iter().map(|&r| targets[r]).collect();
    let mut all_rows = Array2::<f32>::zeros((order.len(), FEATURE_LEN));
    for (mut target, &row) in all_rows.rows_mut().into_iter().zip(&order) {
        for (((o, x), m), s) in target
            .iter_mut()
            .zip(set.row(row))
            .zip(&feature_mean)
            .zip(&feature_std)
        {
            *o = (x - m) / s;
        }
    }
    let n_train = split.train.len();
    let train_rows = all_rows.slice(s![..n_train, ..]);
    let train_targets = &ordered_targets[..n_train];

    // Fewer images than features: fit on exact coordinates in the span of the images.
    let basis = (n_train < FEATURE_LEN).then(|| RowBasis::new(train_rows));
    let design = basis.as_ref().map_or(train_rows, |b| b.coordinates.view());

    let search = CrossValidation {
        design: design.slice_move(s![..fold_bounds[config.folds], ..]),
        targets: &train_targets[..fold_bounds[config.folds]],
        classes,
        fold_bounds,
        max_iterations: config.max_iterations,
        threads,
    };
    let (penalty_scores, chosen, fold_params) = search.run(&config.penalties, &mut on_penalty)?;

    let start = mean_params(&fold_params);
    let fit = Problem::new(design, train_targets, classes).fit(
        chosen.penalty,
        start.as_deref(),
        config.max_iterations,
    )?;
    let to_head = |params: &[f64], basis: Option<&RowBasis>| {
        let columns = basis.map_or(FEATURE_LEN, RowBasis::rank);
        let split_at = classes * columns;
        let fitted = ArrayView2::from_shape((classes, columns), &params[..split_at])
            .map_err(|e| VisionError::HeadTraining(e.to_string()))?;
        let weights = match basis {
            Some(basis) => basis.to_features(fitted, train_rows),
            None => fitted.to_owned(),
        };
        Ok::<Head, VisionError>(Head {
            labels: labels.clone(),
            feature_mean: feature_mean.clone(),
            feature_std: feature_std.clone(),
            weights: weights
                .rows()
                .into_iter()
                .map(|row| row.iter().map(|&w| w as f32).collect())
                .collect(),
            bias: params[split_at..].iter().map(|&b| b as f32).collect(),
        })
    };
    let scored_head = to_head(&fit.params, basis.as_ref())?;
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
        let refit = Problem::new(all_rows.view(), &ordered_targets, classes).fit(
            chosen.penalty,
            Some(&start),
            config.max_iterations,
        )?;
        solver.iterations += refit.iterations;
        solver.converged &= refit.converged;
        to_head(&refit.params, None)?
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

/// The penalty search: every penalty on every fold, strongest penalty first, each fold's fit
/// warm-started from its fit at the previous penalty.
struct CrossValidation<'a> {
    /// Training rows grouped by fold: fold `f` is rows `fold_bounds[f]..fold_bounds[f + 1]`.
    design: ArrayView2<'a, f32>,
    targets: &'a [usize],
    classes: usize,
    fold_bounds: Vec<usize>,
    max_iterations: usize,
    threads: usize,
}

impl CrossValidation<'_> {
    /// Scores of every penalty (strongest first), the chosen one, and its fold fits.
    fn run(
        &self,
        penalties: &[f64],
        on_penalty: &mut impl FnMut(&PenaltyScore),
    ) -> Result<(Vec<PenaltyScore>, PenaltyScore, Vec<Vec<f64>>)> {
        let n = self.design.nrows();
        // Folds that hold something out and leave something to train on.
        let folds: Vec<(usize, usize)> = self
            .fold_bounds
            .windows(2)
            .map(|w| (w[0], w[1]))
            .filter(|&(start, end)| end > start && end - start < n)
            .collect();
        let mut order = penalties.to_vec();
        order.sort_by(|a, b| b.total_cmp(a));
        order.dedup();

        let mut warm: Vec<Option<Vec<f64>>> = vec![None; folds.len()];
        let mut scores = Vec::with_capacity(order.len());
        let mut best: Option<(PenaltyScore, Vec<Vec<f64>>)> = None;
        for penalty in order {
            let fits = parallel_map(folds.len(), self.threads, |f| {
                let (start, end) = folds[f];
                let problem = Problem {
                    blocks: vec![
                        (self.design.slice(s![..start, ..]), &self.targets[..start]),
                        (self.design.slice(s![end.., ..]), &self.targets[end..]),
                    ],
                    classes: self.classes,
                };
                let fit = problem.fit(penalty, warm[f].as_deref(), self.max_iterations)?;
                let held_out = logistic::logits(
                    self.design.slice(s![start..end, ..]),
                    &fit.params,
                    self.classes,
                );
                let (loss, correct) = logistic::score(&held_out, &self.targets[start..end]);
                Ok((fit, loss, correct))
            })?;
            let held_out: usize = folds.iter().map(|(start, end)| end - start).sum();
            let held_out = held_out.max(1) as f64;
            let score = PenaltyScore {
                penalty,
                cv_accuracy: fits.iter().map(|(_, _, c)| *c).sum::<usize>() as f64 / held_out,
                cv_log_loss: fits.iter().map(|(_, l, _)| *l).sum::<f64>() / held_out,
                iterations: fits.iter().map(|(f, _, _)| f.iterations).sum(),
            };
            on_penalty(&score);
            scores.push(score);
            let params: Vec<Vec<f64>> = fits.into_iter().map(|(f, _, _)| f.params).collect();
            // Strongest first, so a strictly lower loss is needed to pick a weaker penalty.
            if best
                .as_ref()
                .is_none_or(|(b, _)| score.cv_log_loss < b.cv_log_loss)
            {
                best = Some((score, params.clone()));
            }
            warm = params.into_iter().map(Some).collect();
        }
        let (chosen, params) = best.ok_or_else(|| {
            VisionError::HeadTraining("no penalty was tried; give at least one".into())
        })?;
        Ok((scores, chosen, params))
    }
}

/// The element-wise mean of the folds' parameters: a start for the final fit close to its
/// optimum.
fn mean_params(fold_params: &[Vec<f64>]) -> Option<Vec<f64>> {
    let first = fold_params.first()?;
    let mut mean = vec![0.0; first.len()];
    for params in fold_params {
        for (m, p) in mean.iter_mut().zip(params) {
            *m += p;
        }
    }
    let count = fold_params.len() as f64;
    Some(mean.into_iter().map(|m| m / count).collect())
}

/// Runs `job(0..count)` on up to `threads` scoped threads (thread `t` takes `t`, `t + threads`,
/// …) and returns the results in index order.
fn parallel_map<T: Send>(
    count: usize,
    threads: usize,
    job: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let threads = threads.clamp(1, count.max(1));
    if threads == 1 {
        return (0..count).map(job).collect();
    }
    let mut slots: Vec<Option<Result<T>>> = (0..count).map(|_| None).collect();
    std::thread::scope(|scope| {
        let job = &job;
        let handles: Vec<_> = (0..threads)
            .map(|first| {
                scope.spawn(move || {
                    (first..count)
                        .step_by(threads)
                        .map(|i| (i, job(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(results) => {
                    for (i, result) in results {
                        slots[i] = Some(result);
                    }
                }
                Err(_) => {
                    return Err(VisionError::HeadTraining(
                        "a cross-validation thread panicked".into(),
                    ));
                }
            }
        }
        Ok(())
    })?;
    slots
        .into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| {
                Err(VisionError::HeadTraining(
                    "a cross-validation fit produced no result".into(),
                ))
            })
        })
        .collect()
}

fn standardisation(set: &FeatureSet, rows: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let n = rows.len().max(1) as f64;
    let mut sum = vec![0.0f64; FEATURE_LEN];
    let mut sum_sq = vec![0.0f64; FEATURE_LEN];
    for &row in rows {
        for ((s, q), &x) in sum.iter_mut().zip(sum_sq.iter_mut()).zip(set.row(row)) {
            let x = f64::from(x);
            *s += x;
            *q += x * x;
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std = sum
        .iter()
        .zip(&sum_sq)
        .map(|(s, q)| {
            let variance = (q / n - (s / n).powi(2)).max(0.0);
            // Constant features (often exactly 0 after ReLU6) would divide by zero.
            if variance < 1e-12 {
                1.0
            } else {
                variance.sqrt() as f32
            }
        })
        .collect();
    (mean, std)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Uniform noise around a per-class centre, from a seeded generator.
    fn clustered(classes: usize, per_class: usize, spread: f32, seed: u64) -> FeatureSet {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut set = FeatureSet::default();
        for class in 0..classes {
            for i in 0..per_class {
                let row: Vec<f32> = (0..FEATURE_LEN)
                    .map(|d| {
                        let centre = if d % classes == class { 2.0 } else { 0.0 };
                        centre + spread * (rng.random::<f32>() - 0.5)
                    })
                    .collect();
                set.push(format!("c{class}/{i}"), format!("class-{class}"), &row);
            }
        }
        set
    }

    fn bits(head: &Head) -> Vec<u32> {
        head.weights
            .iter()
            .flatten()
            .chain(&head.bias)
            .map(|v| v.to_bits())
            .collect()
    }

    fn small_grid() -> TrainConfig {
        TrainConfig {
            penalties: vec![1e-3, 1e-1, 10.0],
            ..TrainConfig::default()
        }
    }

    #[test]
    fn same_seed_same_bits_on_any_number_of_threads() {
        let set = clustered(3, 40, 6.0, 1);
        let config = small_grid();
        let one = train_head_on(&set, &config, 1, |_| {}).unwrap();
        let two = train_head_on(&set, &config, 2, |_| {}).unwrap();
        let again = train_head_on(&set, &config, 3, |_| {}).unwrap();
        assert_eq!(bits(&one.head), bits(&two.head));
        assert_eq!(bits(&one.head), bits(&again.head));
        assert_eq!(one.penalty_scores, two.penalty_scores);
        let other = train_head_on(&set, &TrainConfig { seed: 7, ..config }, 2, |_| {}).unwrap();
        assert_ne!(bits(&one.head), bits(&other.head));
    }

    #[test]
    fn learns_separable_classes_and_reports_every_penalty() {
        let set = clustered(4, 50, 3.0, 2);
        let mut reported = Vec::new();
        let trained = train_head(&set, &small_grid(), |s| reported.push(s.penalty)).unwrap();
        assert_eq!(reported, [10.0, 1e-1, 1e-3], "strongest first, each once");
        assert_eq!(trained.penalty_scores.len(), 3);
        let correct = trained
            .split
            .validation
            .iter()
            .filter(|&&row| trained.scored_head.predict(set.row(row)) == trained.targets[row])
            .count();
        assert_eq!(correct, trained.split.validation.len());
        assert!(trained.solver.converged);
        assert!(trained.chosen.cv_accuracy > 0.99);
    }

    /// Labels that have nothing to do with the features: any fit is overfitting, so
    /// cross-validation must pick the strongest penalty (closest to predicting the class prior).
    #[test]
    fn noise_makes_the_strongest_penalty_win() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut set = FeatureSet::default();
        for i in 0..60 {
            let row: Vec<f32> = (0..FEATURE_LEN).map(|_| rng.random::<f32>()).collect();
            set.push(format!("{i}"), format!("class-{}", i % 3), &row);
        }
        let config = TrainConfig {
            penalties: vec![1e-4, 1e-2, 1.0, 30.0],
            ..TrainConfig::default()
        };
        let trained = train_head(&set, &config, |_| {}).unwrap();
        assert_eq!(trained.chosen.penalty, 30.0, "{:?}", trained.penalty_scores);
    }

    /// Tight, well-separated clusters: a weaker penalty gives more confident correct
    /// predictions on held-out folds, so the weakest must win.
    #[test]
    fn clean_separable_data_makes_the_weakest_penalty_win() {
        let set = clustered(3, 30, 0.5, 12);
        let config = TrainConfig {
            penalties: vec![1e-3, 1e-1, 10.0],
            ..TrainConfig::default()
        };
        let trained = train_head(&set, &config, |_| {}).unwrap();
        assert_eq!(trained.chosen.penalty, 1e-3, "{:?}", trained.penalty_scores);
        let losses: Vec<f64> = trained
            .penalty_scores
            .iter()
            .map(|s| s.cv_log_loss)
            .collect();
        assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");
    }

    #[test]
    fn refit_with_validation_uses_every_image_but_the_same_penalty() {
        let set = clustered(3, 20, 8.0, 13);
        let refit = train_head(&set, &small_grid(), |_| {}).unwrap();
        assert_ne!(bits(&refit.head), bits(&refit.scored_head));
        let kept = train_head(
            &set,
            &TrainConfig {
                refit_with_validation: false,
                ..small_grid()
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(bits(&kept.head), bits(&kept.scored_head));
        assert_eq!(bits(&kept.scored_head), bits(&refit.scored_head));
        assert_eq!(kept.chosen, refit.chosen);
    }

    /// More images than features skips the change of basis; fewer uses it. Both must land on
    /// the same optimum of the same objective.
    #[test]
    fn the_basis_changes_nothing_but_the_cost() {
        let set = clustered(2, 12, 4.0, 14);
        let (_, targets) = label_targets(&set.labels);
        let rows: Vec<usize> = (0..set.len()).collect();
        let (mean, std) = standardisation(&set, &rows);
        let x = Array2::from_shape_fn((set.len(), FEATURE_LEN), |(r, c)| {
            (set.row(r)[c] - mean[c]) / std[c]
        });
        let direct = Problem::new(x.view(), &targets, 2)
            .fit(0.05, None, 2000)
            .unwrap();
        let basis = RowBasis::new(x.view());
        let reduced = Problem::new(basis.coordinates.view(), &targets, 2)
            .fit(0.05, None, 2000)
            .unwrap();
        let z =
            ArrayView2::from_shape((2, basis.rank()), &reduced.params[..2 * basis.rank()]).unwrap();
        let mapped = basis.to_features(z, x.view());
        for (a, b) in mapped.iter().zip(&direct.params[..2 * FEATURE_LEN]) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    /// Past the limit, cross-validation scores a stratified sample (so every score is a count
    /// out of the sample's size), while the shipped head still learns from every image.
    #[test]
    fn the_search_samples_large_training_sets() {
        let set = clustered(3, 40, 8.0, 15);
        let config = TrainConfig {
            validation_split: 0.0,
            ..small_grid()
        };
        let limited = train_with_search_limit(&set, &config, 2, 60, |_| {}).unwrap();
        for score in &limited.penalty_scores {
            let correct = score.cv_accuracy * 60.0;
            assert!((correct - correct.round()).abs() < 1e-9, "{score:?}");
        }
        let full = train_with_search_limit(&set, &config, 2, 1000, |_| {}).unwrap();
        assert_ne!(limited.penalty_scores, full.penalty_scores);
        assert_eq!(limited.split.train.len(), 120);
        let again = train_with_search_limit(&set, &config, 1, 60, |_| {}).unwrap();
        assert_eq!(bits(&limited.head), bits(&again.head));
        let correct = (0..set.len())
            .filter(|&row| limited.head.predict(set.row(row)) == limited.targets[row])
            .count();
        assert!(correct >= 114, "{correct} of 120 training images");
    }

    #[test]
    fn folds_are_stratified_balanced_and_seeded() {
        let targets: Vec<usize> = (0..53).map(|i| usize::from(i >= 40)).collect();
        let folds = stratified_folds(&targets, 2, 5, 3);
        for fold in 0..5 {
            let size = folds.iter().filter(|&&f| f == fold).count();
            assert!((10..=11).contains(&size), "fold {fold}: {size}");
            let minority = (0..53)
                .filter(|&i| folds[i] == fold && targets[i] == 1)
                .count();
            assert!((2..=3).contains(&minority), "fold {fold}: {minority}");
        }
        assert_eq!(folds, stratified_folds(&targets, 2, 5, 3));
        assert_ne!(folds, stratified_folds(&targets, 2, 5, 4));
    }

    #[test]
    fn stratified_split_holds_out_each_class_in_proportion() {
        let targets: Vec<usize> = (0..100).map(|i| usize::from(i >= 80)).collect();
        let split = stratified_split(&targets, 2, 0.25, 9);
        let held = |class| {
            split
                .validation
                .iter()
                .filter(|&&r| targets[r] == class)
                .count()
        };
        assert_eq!((held(0), held(1)), (20, 5));
        assert_eq!(split.train.len() + split.validation.len(), 100);
        assert_eq!(split, stratified_split(&targets, 2, 0.25, 9));
        assert_ne!(split, stratified_split(&targets, 2, 0.25, 10));
    }

    #[test]
    fn too_few_images_and_single_labels_are_refused() {
        let mut set = clustered(2, 10, 1.0, 4);
        set.push("c2/0".into(), "rare".into(), &vec![0.0; FEATURE_LEN]);
        match train_head(&set, &TrainConfig::default(), |_| {}) {
            Err(VisionError::TooFewImages {
                label,
                usable,
                minimum,
            }) => {
                assert_eq!((label.as_str(), usable, minimum), ("rare", 1, 5))
            }
            other => panic!("{other:?}"),
        }
        let one = clustered(1, 10, 1.0, 5);
        assert!(matches!(
            train_head(&one, &TrainConfig::default(), |_| {}),
            Err(VisionError::NotEnoughLabels { .. })
        ));
    }

    #[test]
    fn config_errors_name_the_field() {
        let base = TrainConfig::default;
        for (config, field) in [
            (
                TrainConfig {
                    penalties: vec![],
                    ..base()
                },
                "penalties",
            ),
            (
                TrainConfig {
                    penalties: vec![1e-3, f64::NAN],
                    ..base()
                },
                "penalties",
            ),
            (
                TrainConfig {
                    penalties: vec![0.0],
                    ..base()
                },
                "penalties",
            ),
            (TrainConfig { folds: 1, ..base() }, "folds"),
            (
                TrainConfig {
                    max_iterations: 5,
                    ..base()
                },
                "max_iterations",
            ),
            (
                TrainConfig {
                    validation_split: 0.9,
                    ..base()
                },
                "validation_split",
            ),
        ] {
            match config.validate() {
                Err(VisionError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn folding_standardisation_changes_nothing() {
        let set = clustered(3, 20, 4.0, 6);
        let head = train_head(&set, &small_grid(), |_| {}).unwrap().head;
        let (weights, bias) = head.folded();
        let x = set.row(5);
        let direct = head.logits(x);
        for (class, expected) in direct.iter().enumerate() {
            let row = &weights[class * FEATURE_LEN..(class + 1) * FEATURE_LEN];
            let folded = bias[class] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>();
            assert!((folded - expected).abs() < 1e-3, "{folded} vs {expected}");
        }
    }
}
