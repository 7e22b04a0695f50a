//! The penalty search: k-fold cross-validation over the penalty grid, folds fitted in parallel.

use ndarray::{ArrayView2, s};

use super::PenaltyScore;
use super::block::Block;
use super::logistic::{self, Problem};
use crate::error::{Result, VisionError};

/// The penalty search: every penalty on every fold, strongest penalty first, each fold's fit
/// warm-started from its fit at the previous penalty.
pub(super) struct CrossValidation<'a> {
    /// Training rows grouped by fold: fold `f` is rows `fold_bounds[f]..fold_bounds[f + 1]`.
    pub(super) design: ArrayView2<'a, f32>,
    pub(super) targets: &'a [usize],
    pub(super) classes: usize,
    pub(super) fold_bounds: Vec<usize>,
    pub(super) max_iterations: usize,
    pub(super) threads: usize,
}

impl CrossValidation<'_> {
    /// Scores of every penalty (strongest first), the chosen one, and its fold fits.
    pub(super) fn run(
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
                        Block::whole(self.design.slice(s![..start, ..]), &self.targets[..start]),
                        Block::whole(self.design.slice(s![end.., ..]), &self.targets[end..]),
                    ],
                    classes: self.classes,
                    standardisation: None,
                };
                let fit = problem.fit(penalty, warm[f].as_deref(), self.max_iterations)?;
                let held_out = logistic::logits(
                    self.design.slice(s![start..end, ..]),
                    &fit.params,
                    self.classes,
                );
                let (loss, correct) = logistic::score(&held_out, &self.targets[start..end]);
                // The fit's own rows, scored the same way: the training curve beside the
                // validation one (how far the two are apart is how much the fit overfits).
                let mut trained = (0.0, 0);
                for block in &problem.blocks {
                    // The search's rows are whole blocks of the standardised copy.
                    debug_assert!(block.picked.is_none() && problem.standardisation.is_none());
                    let (l, c) = logistic::score(
                        &logistic::logits(block.matrix, &fit.params, self.classes),
                        block.targets,
                    );
                    trained = (trained.0 + l, trained.1 + c);
                }
                Ok(FoldFit {
                    fit,
                    held_out: (loss, correct),
                    trained,
                })
            })?;
            let held_out: usize = folds.iter().map(|(start, end)| end - start).sum();
            let trained_on: usize = folds.iter().map(|(start, end)| n - (end - start)).sum();
            let (held_out, trained_on) = (held_out.max(1) as f64, trained_on.max(1) as f64);
            let score = PenaltyScore {
                penalty,
                cv_accuracy: fits.iter().map(|f| f.held_out.1).sum::<usize>() as f64 / held_out,
                cv_log_loss: fits.iter().map(|f| f.held_out.0).sum::<f64>() / held_out,
                train_accuracy: fits.iter().map(|f| f.trained.1).sum::<usize>() as f64 / trained_on,
                train_log_loss: fits.iter().map(|f| f.trained.0).sum::<f64>() / trained_on,
                iterations: fits.iter().map(|f| f.fit.iterations).sum(),
            };
            on_penalty(&score);
            scores.push(score);
            let params: Vec<Vec<f64>> = fits.into_iter().map(|f| f.fit.params).collect();
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

/// One fold's fit at one penalty, with its (summed log-loss, correct count) on the held-out
/// fold and on its own training rows.
struct FoldFit {
    fit: logistic::Fit,
    held_out: (f64, usize),
    trained: (f64, usize),
}

/// The element-wise mean of the folds' parameters: a start for the final fit close to its
/// optimum.
pub(super) fn mean_params(fold_params: &[Vec<f64>]) -> Option<Vec<f64>> {
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
