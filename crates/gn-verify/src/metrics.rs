//! The figures compared between the ANN and its spiking versions: output MSE (absolute
//! and relative), top-1 predictions and accuracy.

use ndarray::ArrayD;

/// Mean squared difference of two arrays of one shape.
pub fn mse(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len().max(1) as f64
}

/// MSE of `got` against `reference`, relative to the mean square of `reference`.
pub fn relative_mse(got: &ArrayD<f32>, reference: &ArrayD<f32>) -> f64 {
    let ms = reference.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / reference.len().max(1) as f64;
    mse(got, reference) / ms
}

/// Index of the largest value in each row (over all but the first axis).
pub fn top1(a: &ArrayD<f32>) -> Vec<usize> {
    a.outer_iter()
        .map(|r| r.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0)
        .collect()
}

pub fn accuracy(pred: &[usize], labels: &[usize]) -> f64 {
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / pred.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr2, IxDyn};

    #[test]
    fn mse_is_the_mean_of_squared_differences_and_relative_mse_divides_by_the_reference_power() {
        let a = arr2(&[[1.0f32, 2.0], [3.0, 4.0]]).into_dyn();
        let b = arr2(&[[1.0f32, 0.0], [3.0, 8.0]]).into_dyn();
        assert_eq!(mse(&a, &b), (4.0 + 16.0) / 4.0);
        assert_eq!(relative_mse(&a, &b), 5.0 / ((1.0 + 9.0 + 64.0) / 4.0));
        assert_eq!(mse(&a, &a), 0.0);
    }

    #[test]
    fn top1_takes_the_first_of_equal_maxima_and_accuracy_counts_matches() {
        let scores =
            ArrayD::from_shape_vec(IxDyn(&[3, 3]), vec![0.1, 0.9, 0.0, 2.0, 2.0, 1.0, -1.0, -3.0, -0.5]).unwrap();
        let pred = top1(&scores);
        assert_eq!(pred, [1, 0, 2]);
        assert_eq!(accuracy(&pred, &[1, 1, 2]), 2.0 / 3.0);
        assert_eq!(accuracy(&[], &[]), 0.0);
    }
}
