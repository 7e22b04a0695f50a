//! One multinomial logistic regression fit: mean cross-entropy plus `penalty / 2 · ‖W‖²` (the
//! bias is not penalised), minimised with argmin's L-BFGS and a Moré–Thuente line search.
//!
//! Parameters are one flat `Vec<f64>`: `classes × columns` weights, row-major, then `classes`
//! biases. f64 throughout: the line search needs gradients more precise than f32 gives near the
//! optimum.

use std::cell::RefCell;

use argmin::core::{CostFunction, Executor, Gradient, State, TerminationReason, TerminationStatus};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use ndarray::{Array2, ArrayView2};

use crate::error::{Result, VisionError};

/// L-BFGS memory: 10 correction pairs, scikit-learn's and SciPy's default.
const HISTORY: usize = 10;
/// Stop when the gradient's L2 norm falls below this; the objective is a mean over images,
/// so the tolerance does not depend on the dataset's size.
const GRADIENT_TOLERANCE: f64 = 1e-4;
/// ...or when an iteration improves the objective by less than this fraction.
const COST_TOLERANCE: f64 = 1e-10;

/// Labelled rows, one per image, in contiguous blocks of one matrix: a cross-validation fold
/// trains on the rows before and after its held-out block, so no fold copies the features.
pub(super) struct Problem<'a> {
    pub blocks: Vec<(ArrayView2<'a, f64>, &'a [usize])>,
    pub classes: usize,
}

/// The outcome of one fit.
pub(super) struct Fit {
    pub params: Vec<f64>,
    pub iterations: usize,
    /// False when the iteration limit ended the fit.
    pub converged: bool,
}

impl<'a> Problem<'a> {
    pub fn new(rows: ArrayView2<'a, f64>, targets: &'a [usize], classes: usize) -> Self {
        Problem {
            blocks: vec![(rows, targets)],
            classes,
        }
    }

    fn columns(&self) -> usize {
        self.blocks.first().map_or(0, |(rows, _)| rows.ncols())
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
        let columns = self.columns();
        let split = self.classes * columns;
        let n = self
            .blocks
            .iter()
            .map(|(rows, _)| rows.nrows())
            .sum::<usize>()
            .max(1) as f64;
        let mut loss = 0.0;
        let mut weight_gradient = Array2::<f64>::zeros((self.classes, columns));
        let mut bias_gradient = vec![0.0; self.classes];
        for (rows, targets) in &self.blocks {
            if rows.nrows() == 0 {
                continue;
            }
            let mut residual = logits(*rows, params, self.classes);
            for (mut row, &target) in residual.rows_mut().into_iter().zip(*targets) {
                let log_sum = log_sum_exp(row.iter().copied());
                loss += log_sum - row[target];
                for value in row.iter_mut() {
                    *value = (*value - log_sum).exp() / n;
                }
                row[target] -= 1.0 / n;
            }
            // `residual` now holds (P − Y) / n for this block.
            ndarray::linalg::general_mat_mul(1.0, &residual.t(), rows, 1.0, &mut weight_gradient);
            for (g, column) in bias_gradient.iter_mut().zip(residual.columns()) {
                *g += column.sum();
            }
        }
        let weights = &params[..split];
        let squared: f64 = weights.iter().map(|w| w * w).sum();
        let mut gradient = weight_gradient.into_raw_vec_and_offset().0;
        for (g, w) in gradient.iter_mut().zip(weights) {
            *g += penalty * w;
        }
        gradient.extend(bias_gradient);
        (loss / n + 0.5 * penalty * squared, gradient)
    }
}

/// Class scores (`rows × classes`) under `params`.
pub(super) fn logits(rows: ArrayView2<'_, f64>, params: &[f64], classes: usize) -> Array2<f64> {
    let columns = rows.ncols();
    let split = classes * columns;
    let weights = ArrayView2::from_shape((classes, columns), &params[..split])
        .unwrap_or_else(|_| unreachable!("parameter_count() sizes the weights"));
    let mut logits = rows.dot(&weights.t());
    for mut row in logits.rows_mut() {
        for (value, bias) in row.iter_mut().zip(&params[split..]) {
            *value += bias;
        }
    }
    logits
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

    fn toy() -> (Array2<f64>, Vec<usize>) {
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

    #[test]
    fn blocks_are_the_same_rows_as_one_matrix() {
        let (rows, targets) = toy();
        let whole = Problem::new(rows.view(), &targets, 3);
        let split = Problem {
            blocks: vec![
                (rows.slice(ndarray::s![..2, ..]), &targets[..2]),
                (rows.slice(ndarray::s![2..2, ..]), &targets[2..2]),
                (rows.slice(ndarray::s![2.., ..]), &targets[2..]),
            ],
            classes: 3,
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
