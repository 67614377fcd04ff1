//! Sparklines for the terminal: a series into `▁▂▃▄▅▆▇█`, with gaps as spaces.

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `values` (gaps as `None`) squeezed into at most `width` characters: each character is the mean
/// of its share of the values, scaled between the smallest and largest of them.
pub fn sparkline(values: &[Option<f64>], width: usize) -> String {
    let width = width.max(1);
    let per = values.len().div_ceil(width).max(1);
    let cells: Vec<Option<f64>> = values
        .chunks(per)
        .map(|c| {
            let ok: Vec<f64> = c.iter().flatten().copied().filter(|v| v.is_finite()).collect();
            (!ok.is_empty()).then(|| ok.iter().sum::<f64>() / ok.len() as f64)
        })
        .collect();
    let (lo, hi) =
        cells.iter().flatten().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    cells
        .iter()
        .map(|c| match c {
            None => ' ',
            Some(v) if hi > lo => {
                let i = ((v - lo) / (hi - lo) * 7.0).round();
                BARS[(i.clamp(0.0, 7.0)) as usize]
            }
            Some(_) => BARS[3],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_follow_the_values_and_gaps_stay_blank() {
        let v: Vec<Option<f64>> = (0..8).map(|i| Some(f64::from(i))).collect();
        assert_eq!(sparkline(&v, 8), "▁▂▃▄▅▆▇█");
        assert_eq!(sparkline(&[Some(1.0), None, Some(1.0)], 10), "▄ ▄");
        assert_eq!(sparkline(&v, 4).chars().count(), 4);
        assert_eq!(sparkline(&[], 4), "");
        assert_eq!(sparkline(&[Some(f64::NAN), Some(f64::INFINITY)], 4), "  ");
    }
}
