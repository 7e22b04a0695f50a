//! One multinomial logistic regression fit: mean cross-entropy plus `penalty / 2 · ‖W‖²` (the
//! bias is not penalised), minimised with argmin's L-BFGS and a Moré–Thuente line search.
//!
//! Parameters are one flat `Vec<f64>`: `classes × columns` weights, row-major, then `classes`
//! biases. The features stay f32 (as extracted: half the memory of f64), but every product is
//! accumulated in f64: the line search needs gradients more precise than f32 gives near the
//! optimum.
//!
//! The loss and gradient are one fused pass over the rows, a few rows at a time (see
//! [`BLOCK`]), written by hand: a general matrix multiply copies (packs) the whole feature matrix
//! twice per evaluation for these skinny shapes (1280 features, ~10 classes), which made it
//! memory-bound and ~3× slower.

use std::cell::RefCell;

use argmin::core::{CostFunction, Executor, Gradient, State, TerminationReason, TerminationStatus};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use ndarray::{Array2, ArrayView2};

use super::block::{Block, Standardisation};

/// Rows evaluated together, so each weight row is read once per block rather than once per row.
pub(super) const BLOCK: usize = 4;

use crate::error::{Result, VisionError};

/// L-BFGS memory: 10 correction pairs, scikit-learn's and SciPy's default.
const HISTORY: usize = 10;
/// Stop when the gradient's L2 norm falls below this; the objective is a mean over images,
/// so the tolerance does not depend on the dataset's size.
const GRADIENT_TOLERANCE: f64 = 1e-4;
/// ...or when an iteration improves the objective by less than this fraction.
const COST_TOLERANCE: f64 = 1e-10;

/// Labelled rows, one per image, in blocks read in place: a cross-validation fold trains on the
/// rows before and after its held-out block, and the final fits read the extracted features
/// themselves, so no fit copies the features.
pub(super) struct Problem<'a> {
    pub blocks: Vec<Block<'a>>,
    pub classes: usize,
    /// Set when the rows are raw features: the parameters are still over standardised features
    /// (the same penalty, the same head), folded into each evaluation instead of a standardised
    /// copy of every row, which would double the memory of a large training set.
    pub standardisation: Option<Standardisation<'a>>,
}

/// The outcome of one fit.
pub(super) struct Fit {
    pub params: Vec<f64>,
    pub iterations: usize,
    /// False when the iteration limit ended the fit.
    pub converged: bool,
}

impl<'a> Problem<'a> {
    /// Every row of `rows`, as they are.
    pub fn new(rows: ArrayView2<'a, f32>, targets: &'a [usize], classes: usize) -> Self {
        Problem {
            blocks: vec![Block::whole(rows, targets)],
            classes,
            standardisation: None,
        }
    }

    fn columns(&self) -> usize {
        self.blocks.first().map_or(0, |block| block.matrix.ncols())
    }

    pub fn parameter_count(&self) -> usize {
        self.classes * (self.columns() + 1)
    }

    /// Minimises the penalised loss from `start` (zeros when `None`).
    pub fn fit(&self, penalty: f64, start: Option<&[f64]>, max_iterations: usize) -> Result<Fit> {
        let params = start.map_or_else(|| vec![0.0; self.parameter_count()], <[f64]>::to_vec);
        let objective = Objective {
            problem: self,
            penalty,
            last: RefCell::new(None),
        };
        let failed = |e: argmin::core::Error| VisionError::HeadTraining(e.to_string());
        let solver = LBFGS::new(MoreThuenteLineSearch::new(), HISTORY)
            .with_tolerance_grad(GRADIENT_TOLERANCE)
            .map_err(failed)?
            .with_tolerance_cost(COST_TOLERANCE)
            .map_err(failed)?;
        let mut result = Executor::new(objective, solver)
            .configure(|state| state.param(params).max_iters(max_iterations as u64))
            .run()
            .map_err(failed)?;
        let iterations = result.state.get_iter() as usize;
        let converged = !matches!(
            result.state.get_termination_status(),
            TerminationStatus::Terminated(TerminationReason::MaxItersReached)
        );
        let params = result
            .state
            .take_best_param()
            .ok_or_else(|| VisionError::HeadTraining("the solver returned no parameters".into()))?;
        if params.iter().any(|v| !v.is_finite()) {
            return Err(VisionError::HeadTraining(
                "the solver diverged (non-finite weights); are the features finite?".into(),
            ));
        }
        Ok(Fit {
            params,
            iterations,
            converged,
        })
    }

    /// Mean penalised loss and its gradient.
    fn loss_and_gradient(&self, params: &[f64], penalty: f64) -> (f64, Vec<f64>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.loss_and_gradient_avx2(params, penalty) };
        }
        self.loss_and_gradient_portable(params, penalty)
    }

    /// The same code compiled for AVX2 (4 f64 lanes instead of SSE2's 2): x86-64 builds target
    /// SSE2 only, and Lambda's x86 CPUs all have AVX2. No FMA, so the results are the same bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn loss_and_gradient_avx2(&self, params: &[f64], penalty: f64) -> (f64, Vec<f64>) {
        self.loss_and_gradient_portable(params, penalty)
    }

    #[inline(always)]
    fn loss_and_gradient_portable(&self, params: &[f64], penalty: f64) -> (f64, Vec<f64>) {
        let columns = self.columns();
        let classes = self.classes;
        let (weights, bias) = params.split_at(classes * columns);
        let folded = self.standardisation.map(|s| s.fold(weights, bias));
        let (applied_weights, applied_bias) = folded
            .as_ref()
            .map_or((weights, bias), |(w, b)| (w.as_slice(), b.as_slice()));
        let n = self.blocks.iter().map(Block::len).sum::<usize>().max(1) as f64;
        let mut loss = 0.0;
        let mut gradient = vec![0.0; params.len()];
        let (weight_gradient, bias_gradient) = gradient.split_at_mut(classes * columns);
        let mut scores = vec![0.0; BLOCK * classes];
        for block in &self.blocks {
            // Inlined, so that the AVX2 copy of this function compiles the closure for AVX2 too.
            block.for_each_chunk(
                #[inline(always)]
                |chunk_rows, chunk_targets| {
                    let scores = &mut scores[..chunk_rows.len() * classes];
                    block_logits(chunk_rows, applied_weights, applied_bias, scores);
                    // Turn each row's scores into its residual (P − Y) / n.
                    for (row_scores, &target) in scores.chunks_mut(classes).zip(chunk_targets) {
                        let log_sum = log_sum_exp(row_scores.iter().copied());
                        loss += log_sum - row_scores[target];
                        for value in row_scores.iter_mut() {
                            *value = (*value - log_sum).exp() / n;
                        }
                        row_scores[target] -= 1.0 / n;
                    }
                    let mut residuals = [0.0; BLOCK];
                    let residuals = &mut residuals[..chunk_rows.len()];
                    for class in 0..classes {
                        for (residual, row_scores) in
                            residuals.iter_mut().zip(scores.chunks(classes))
                        {
                            *residual = row_scores[class];
                        }
                        add_rows(
                            residuals,
                            chunk_rows,
                            &mut weight_gradient[class * columns..(class + 1) * columns],
                        );
                        bias_gradient[class] += residuals.iter().sum::<f64>();
                    }
                },
            );
        }
        if let Some(standardisation) = self.standardisation {
            standardisation.unfold_gradient(weight_gradient, bias_gradient);
        }
        let mut squared = 0.0;
        for (g, w) in weight_gradient.iter_mut().zip(weights) {
            *g += penalty * w;
            squared += w * w;
        }
        (loss / n + 0.5 * penalty * squared, gradient)
    }
}

/// Class scores (`rows × classes`) under `params`.
pub(super) fn logits(rows: ArrayView2<'_, f32>, params: &[f64], classes: usize) -> Array2<f64> {
    let columns = rows.ncols();
    let (weights, bias) = params.split_at(classes * columns);
    let rows = rows.as_standard_layout();
    let mut out = Array2::zeros((rows.nrows(), classes));
    let (Some(data), Some(scores)) = (rows.as_slice(), out.as_slice_mut()) else {
        unreachable!("standard-layout arrays are one slice")
    };
    for (chunk, chunk_scores) in data
        .chunks(BLOCK * columns.max(1))
        .zip(scores.chunks_mut(BLOCK * classes))
    {
        let (row_slots, count) = block_rows(chunk, columns);
        block_logits(&row_slots[..count], weights, bias, chunk_scores);
    }
    out
}

/// Up to [`BLOCK`] rows of a row-major chunk as slices, and how many there are: no
/// allocation, as this runs once per block of rows in every evaluation.
#[inline(always)]
pub(super) fn block_rows(chunk: &[f32], columns: usize) -> ([&[f32]; BLOCK], usize) {
    let mut rows: [&[f32]; BLOCK] = [&[]; BLOCK];
    let mut count = 0;
    for (slot, row) in rows.iter_mut().zip(chunk.chunks(columns.max(1))) {
        *slot = row;
        count += 1;
    }
    (rows, count)
}

/// `scores[r * classes + c] = bias[c] + rows[r] · weights[c]` for up to [`BLOCK`] rows.
#[inline(always)]
fn block_logits(rows: &[&[f32]], weights: &[f64], bias: &[f64], scores: &mut [f64]) {
    let classes = bias.len();
    let columns = rows.first().map_or(0, |r| r.len());
    for (class, &b) in bias.iter().enumerate() {
        let w = &weights[class * columns..(class + 1) * columns];
        if let [r0, r1, r2, r3] = rows {
            let dots = dot_rows([r0, r1, r2, r3], w);
            for (r, dot) in dots.into_iter().enumerate() {
                scores[r * classes + class] = b + dot;
            }
        } else {
            for (r, row) in rows.iter().enumerate() {
                scores[r * classes + class] = b + dot_rows([row], w)[0];
            }
        }
    }
}

/// `target += Σ_r alphas[r] · rows[r]`, several rows per pass over `target`.
#[inline(always)]
fn add_rows(alphas: &[f64], rows: &[&[f32]], target: &mut [f64]) {
    if let ([a0, a1, a2, a3], [r0, r1, r2, r3]) = (alphas, rows) {
        let n = target.len();
        let (r0, r1, r2, r3) = (&r0[..n], &r1[..n], &r2[..n], &r3[..n]);
        for (j, t) in target.iter_mut().enumerate() {
            *t += a0 * f64::from(r0[j])
                + a1 * f64::from(r1[j])
                + a2 * f64::from(r2[j])
                + a3 * f64::from(r3[j]);
        }
    } else {
        for (alpha, row) in alphas.iter().zip(rows) {
            for (t, x) in target.iter_mut().zip(row.iter()) {
                *t += alpha * f64::from(*x);
            }
        }
    }
}

/// Dot products of `R` rows with one weight row: each weight chunk is loaded once for all `R`
/// rows, and every row has four independent f64 accumulators, so the compiler vectorises while
/// the summation order stays fixed (bit-reproducible).
#[inline(always)]
fn dot_rows<const R: usize>(rows: [&[f32]; R], weights: &[f64]) -> [f64; R] {
    const LANES: usize = 4;
    let mut lanes = [[0.0f64; LANES]; R];
    let (weight_chunks, weight_tail) = weights.as_chunks::<LANES>();
    let full = weight_chunks.len() * LANES;
    let row_chunks: [&[[f32; LANES]]; R] = rows.map(|row| row[..full].as_chunks::<LANES>().0);
    for (i, w) in weight_chunks.iter().enumerate() {
        for r in 0..R {
            let x = &row_chunks[r][i];
            for lane in 0..LANES {
                lanes[r][lane] += f64::from(x[lane]) * w[lane];
            }
        }
    }
    let mut out = [0.0; R];
    for (r, row) in rows.iter().enumerate() {
        let tail: f64 = row[full..weights.len()]
            .iter()
            .zip(weight_tail)
            .map(|(x, w)| f64::from(*x) * w)
            .sum();
        out[r] = lanes[r].iter().sum::<f64>() + tail;
    }
    out
}

/// Mean cross-entropy and number of correct predictions of `logits` against `targets`.
pub(super) fn score(logits: &Array2<f64>, targets: &[usize]) -> (f64, usize) {
    let mut loss = 0.0;
    let mut correct = 0;
    for (row, &target) in logits.rows().into_iter().zip(targets) {
        loss += log_sum_exp(row.iter().copied()) - row[target];
        let best = row
            .iter()
            .enumerate()
            .fold(0, |best, (i, v)| if *v > row[best] { i } else { best });
        correct += usize::from(best == target);
    }
    (loss, correct)
}

fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Parameters, cost and gradient of one evaluation.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

/// The function argmin minimises. L-BFGS and its line search ask for the cost and the gradient
/// at the same point in separate calls, so the last evaluation is kept.
struct Objective<'p, 'a> {
    problem: &'p Problem<'a>,
    penalty: f64,
    last: RefCell<Option<Evaluation>>,
}

impl Objective<'_, '_> {
    fn evaluate(&self, params: &[f64]) -> (f64, Vec<f64>) {
        if let Some((at, cost, gradient)) = self.last.borrow().as_ref()
            && at.as_slice() == params
        {
            return (*cost, gradient.clone());
        }
        let (cost, gradient) = self.problem.loss_and_gradient(params, self.penalty);
        *self.last.borrow_mut() = Some((params.to_vec(), cost, gradient.clone()));
        (cost, gradient)
    }
}

impl CostFunction for Objective<'_, '_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, params: &Self::Param) -> std::result::Result<f64, argmin::core::Error> {
        Ok(self.evaluate(params).0)
    }
}

impl Gradient for Objective<'_, '_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, params: &Self::Param) -> std::result::Result<Vec<f64>, argmin::core::Error> {
        Ok(self.evaluate(params).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Array2<f32>, Vec<usize>) {
        let rows = Array2::from_shape_vec(
            (6, 2),
            vec![
                1.0, 0.2, 0.9, -0.1, -1.0, 0.1, -0.8, 0.0, 0.1, 1.0, -0.1, 0.9,
            ],
        )
        .unwrap();
        (rows, vec![0, 0, 1, 1, 2, 2])
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (rows, targets) = toy();
        let problem = Problem::new(rows.view(), &targets, 3);
        let params: Vec<f64> = (0..problem.parameter_count())
            .map(|i| 0.1 * i as f64 - 0.4)
            .collect();
        let (_, gradient) = problem.loss_and_gradient(&params, 0.3);
        for i in 0..params.len() {
            let mut up = params.clone();
            let mut down = params.clone();
            up[i] += 1e-6;
            down[i] -= 1e-6;
            let numeric = (problem.loss_and_gradient(&up, 0.3).0
                - problem.loss_and_gradient(&down, 0.3).0)
                / 2e-6;
            assert!(
                (numeric - gradient[i]).abs() < 1e-6,
                "{i}: {numeric} vs {}",
                gradient[i]
            );
        }
    }

    #[test]
    fn converges_to_a_stationary_point() {
        let (rows, targets) = toy();
        let problem = Problem::new(rows.view(), &targets, 3);
        let fit = problem.fit(0.01, None, 500).unwrap();
        assert!(fit.converged);
        let (_, gradient) = problem.loss_and_gradient(&fit.params, 0.01);
        let norm = gradient.iter().map(|g| g * g).sum::<f64>().sqrt();
        assert!(norm < 1e-4, "gradient norm {norm}");
        let (_, correct) = score(&logits(rows.view(), &fit.params, 3), &targets);
        assert_eq!(correct, 6);
    }

    /// Raw rows picked by index with the standardisation folded in must be the same objective
    /// as a standardised copy of those rows: the final fits rely on it to skip the copy.
    #[test]
    fn picked_raw_rows_are_the_standardised_rows() {
        let raw = Array2::from_shape_fn((7, 3), |(r, c)| {
            ((r * 7 + c * 3) % 5) as f32 * 0.7 + c as f32 - 1.0
        });
        let targets = [0, 1, 2, 0, 1, 2, 1];
        let mean = [0.4f32, 1.3, 2.1];
        let std = [0.9f32, 1.7, 0.6];
        let picked = [5, 0, 3, 6];
        let picked_targets: Vec<usize> = picked.iter().map(|&r| targets[r]).collect();
        let copy = Array2::from_shape_fn((picked.len(), 3), |(r, c)| {
            (raw[[picked[r], c]] - mean[c]) / std[c]
        });
        let standardised = Problem::new(copy.view(), &picked_targets, 3);
        let folded = Problem {
            blocks: vec![Block {
                matrix: raw.view(),
                picked: Some(&picked),
                targets: &picked_targets,
            }],
            classes: 3,
            standardisation: Some(Standardisation {
                mean: &mean,
                std: &std,
            }),
        };
        let params: Vec<f64> = (0..standardised.parameter_count())
            .map(|i| 0.3 * (i as f64).sin())
            .collect();
        let (a, ga) = standardised.loss_and_gradient(&params, 0.2);
        let (b, gb) = folded.loss_and_gradient(&params, 0.2);
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        for (x, y) in ga.iter().zip(&gb) {
            assert!((x - y).abs() < 1e-6, "{ga:?} vs {gb:?}");
        }
        let whole = Problem {
            blocks: vec![Block::whole(raw.view(), &targets)],
            ..folded
        };
        assert!((whole.loss_and_gradient(&params, 0.2).0 - a).abs() > 1e-6);
    }

    #[test]
    fn blocks_are_the_same_rows_as_one_matrix() {
        let (rows, targets) = toy();
        let whole = Problem::new(rows.view(), &targets, 3);
        let split = Problem {
            blocks: vec![
                Block::whole(rows.slice(ndarray::s![..2, ..]), &targets[..2]),
                Block::whole(rows.slice(ndarray::s![2..2, ..]), &targets[2..2]),
                Block::whole(rows.slice(ndarray::s![2.., ..]), &targets[2..]),
            ],
            classes: 3,
            standardisation: None,
        };
        let params: Vec<f64> = (0..whole.parameter_count())
            .map(|i| 0.05 * i as f64)
            .collect();
        let (a, ga) = whole.loss_and_gradient(&params, 0.1);
        let (b, gb) = split.loss_and_gradient(&params, 0.1);
        assert!((a - b).abs() < 1e-12);
        for (x, y) in ga.iter().zip(&gb) {
            assert!((x - y).abs() < 1e-12);
        }
    }
}
