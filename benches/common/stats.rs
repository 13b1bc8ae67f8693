//! Samples of named steps and their summaries.

use std::collections::BTreeMap;
use std::time::Duration;

/// Durations in milliseconds, by step name, in the order recorded.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    steps: BTreeMap<String, Vec<f64>>,
}

impl Samples {
    /// Adds one sample of `step`.
    pub fn add(&mut self, step: &str, duration: Duration) {
        self.add_ms(step, duration.as_secs_f64() * 1e3);
    }

    /// Adds one sample of `step`, in milliseconds.
    pub fn add_ms(&mut self, step: &str, milliseconds: f64) {
        self.steps
            .entry(step.to_owned())
            .or_default()
            .push(milliseconds);
    }

    /// Returns the samples of `step`.
    pub fn get(&self, step: &str) -> &[f64] {
        self.steps.get(step).map_or(&[], Vec::as_slice)
    }

    /// Returns the median of `step`, or NaN when it has no sample.
    pub fn median(&self, step: &str) -> f64 {
        percentile(self.get(step), 50.0)
    }

    /// Returns the step names.
    pub fn steps(&self) -> impl Iterator<Item = &str> {
        self.steps.keys().map(String::as_str)
    }

    /// Returns a JSON object of each step's count, median, p10, p90, min
    /// and max.
    pub fn summary_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        for (step, values) in &self.steps {
            object.insert(step.clone(), summary(values));
        }
        serde_json::Value::Object(object)
    }
}

/// Returns the `p`th percentile (0 to 100) of `values` by linear
/// interpolation between closest ranks, or NaN for no values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// Returns count, median, p10, p90, min and max of `values` as JSON.
pub fn summary(values: &[f64]) -> serde_json::Value {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    serde_json::json!({
        "count": values.len(),
        "median_ms": percentile(values, 50.0),
        "p10_ms": percentile(values, 10.0),
        "p90_ms": percentile(values, 90.0),
        "min_ms": min,
        "max_ms": max,
    })
}
