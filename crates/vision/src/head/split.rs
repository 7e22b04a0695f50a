//! Seeded, stratified partitions of the labelled rows: the held-out validation split and the
//! cross-validation folds.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Which rows of a [`FeatureSet`](crate::FeatureSet) train and which validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
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
