//! Charts as SVG made here, inline in the page: no script, nothing fetched, and presentation
//! attributes only (the page's CSP allows no inline style).
use maud::{html, Markup};

/// Colours for series, in order (readable on white, distinguishable in greyscale too).
const PALETTE: [&str; 8] = ["#1f6feb", "#e36209", "#2da44e", "#8250df", "#bf3989", "#9a6700", "#0a7b83", "#57606a"];

pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 10.0;

/// A stacked bar chart: `bars[i][s]` is series `s` in bar `i`; `labels` marks some bars on the
/// x axis (index, text). Each bar has a tooltip with its total.
pub fn stacked_bars(
    id: &str,
    title: &str,
    bars: &[Vec<i64>],
    series: &[String],
    labels: &[(usize, String)],
    tooltip: impl Fn(usize) -> String,
) -> Markup {
    let max = bars.iter().map(|b| b.iter().sum::<i64>()).max().unwrap_or(0).max(1);
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let n = bars.len().max(1) as f64;
    let slot = plot_w / n;
    let bar_w = (slot * 0.8).max(1.0);
    let y = |v: i64| TOP + plot_h - (v as f64 / max as f64) * plot_h;
    // Each bar's non-empty segments, bottom up: (top y, height, series).
    let segments: Vec<Vec<(f64, f64, usize)>> = bars
        .iter()
        .map(|bar| {
            let mut base = 0;
            let mut out = Vec::new();
            for (s, v) in bar.iter().enumerate() {
                if *v > 0 {
                    out.push((y(base + v), y(base) - y(base + v), s));
                }
                base += v;
            }
            out
        })
        .collect();
    html! {
        figure.chart id=(id) {
            figcaption { (title) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width="100%" role="img" aria-label=(title) {
                // Axes and the scale: 0 and the maximum.
                line x1=(LEFT) y1=(TOP + plot_h) x2=(WIDTH - 8.0) y2=(TOP + plot_h) stroke="#8c959f" {}
                line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_h) stroke="#8c959f" {}
                text x=(LEFT - 4.0) y=(TOP + 8.0) text-anchor="end" font-size="11" { (max) }
                text x=(LEFT - 4.0) y=(TOP + plot_h) text-anchor="end" font-size="11" { "0" }
                @for (i, bar) in bars.iter().enumerate() {
                    @let x = LEFT + i as f64 * slot + (slot - bar_w) / 2.0;
                    g.bar data-total=(bar.iter().sum::<i64>()) {
                        title { (tooltip(i)) }
                        @for (top, h, s) in &segments[i] {
                            rect x=(format!("{x:.1}")) y=(format!("{top:.1}")) width=(format!("{bar_w:.1}"))
                                height=(format!("{h:.1}")) fill=(colour(*s)) {}
                        }
                    }
                }
                @for (i, text) in labels {
                    text x=(format!("{:.1}", LEFT + (*i as f64 + 0.5) * slot)) y=(HEIGHT - 10.0)
                        text-anchor="middle" font-size="11" { (text) }
                }
            }
            @if series.len() > 1 {
                ul.legend {
                    @for (s, name) in series.iter().enumerate() {
                        li { svg width="10" height="10" { rect width="10" height="10" fill=(colour(s)) {} } " " (name) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_total_and_skip_empty_segments() {
        let svg = stacked_bars("c", "t", &[vec![1, 3], vec![0, 0], vec![2, 0]], &["A".into(), "B".into()], &[], |i| {
            format!("bar {i}")
        })
        .into_string();
        assert_eq!(svg.matches("<rect").count(), 3 + 2, "3 non-empty segments and 2 legend swatches");
        assert!(svg.contains(r#"data-total="4""#) && svg.contains(r#"data-total="0""#));
        // The tallest bar reaches the top of the plot (y = TOP).
        assert!(svg.contains(r#"y="10.0""#), "{svg}");
        assert!(svg.contains("<title>bar 1</title>"));
    }

    #[test]
    fn text_is_escaped() {
        let svg = stacked_bars("c", "<script>", &[vec![1]], &["<b>".into()], &[(0, "<i>".into())], |_| "&".into())
            .into_string();
        assert!(!svg.contains("<script>") && !svg.contains("<i>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;") && svg.contains("&amp;"));
    }
}
