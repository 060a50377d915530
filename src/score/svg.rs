//! Small hand-written SVG figures for the sweep report: heat maps (E_OF, E_OS) and line plots
//! (a criterion against compression strength, one line per order). Plain SVG 1.1 text, no
//! plotting dependency; the output is deterministic (fixed number formatting).

use std::fmt::Write;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A value in [0, 1] as a white-to-red fill (clamped; higher = worse for E_OF and E_OS).
fn heat(v: f64) -> String {
    let t = v.clamp(0.0, 1.0);
    let mix = |hi: f64, lo: f64| (hi + (lo - hi) * t).round() as u8;
    format!(
        "rgb({},{},{})",
        mix(255.0, 165.0),
        mix(255.0, 15.0),
        mix(255.0, 21.0)
    )
}

const CELL_W: f64 = 84.0;
const CELL_H: f64 = 34.0;

/// Heat-map panels side by side (same rows and columns), cells labelled with their values.
pub fn heatmaps(
    title: &str,
    rows: &[String],
    cols: &[String],
    panels: &[(String, Vec<Vec<Option<f64>>>)],
) -> String {
    let label_w = 12.0 + 7.0 * rows.iter().map(|r| r.chars().count()).max().unwrap_or(4) as f64;
    let panel_w = label_w + CELL_W * cols.len() as f64 + 24.0;
    let (top, width) = (64.0, panel_w * panels.len() as f64 + 12.0);
    let height = top + CELL_H * rows.len() as f64 + 20.0;
    let mut s = header(width, height);
    let _ = writeln!(
        s,
        r#"<text x="8" y="20" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (p, (name, grid)) in panels.iter().enumerate() {
        let x0 = 8.0 + panel_w * p as f64;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="40" font-size="13" font-weight="bold">{}</text>"#,
            x0 + label_w,
            escape(name)
        );
        for (j, c) in cols.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
                x0 + label_w + CELL_W * (j as f64 + 0.5),
                top - 6.0,
                escape(c)
            );
        }
        for (i, r) in rows.iter().enumerate() {
            let y = top + CELL_H * i as f64;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
                x0 + label_w - 6.0,
                y + CELL_H / 2.0 + 4.0,
                escape(r)
            );
            for j in 0..cols.len() {
                let x = x0 + label_w + CELL_W * j as f64;
                let v = grid.get(i).and_then(|g| g.get(j)).copied().flatten();
                let (fill, text, ink) = match v {
                    Some(v) => (
                        heat(v),
                        format!("{v:.2}"),
                        if v > 0.6 { "white" } else { "black" },
                    ),
                    None => ("rgb(235,235,235)".to_string(), "-".to_string(), "black"),
                };
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{CELL_W:.1}" height="{CELL_H:.1}" fill="{fill}" stroke="rgb(187,187,187)"/><text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="{ink}">{text}</text>"#,
                    x + CELL_W / 2.0,
                    y + CELL_H / 2.0 + 4.0
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// One line of a line plot.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel of a line plot: a title and its series; `unit` bounds the y axis to [0, 1].
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
    pub unit: bool,
}

const COLOURS: [&str; 4] = ["#1b6ca8", "#d1495b", "#2e8b57", "#8a5a00"];
const PW: f64 = 300.0;
const PH: f64 = 230.0;

fn range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// Line-plot panels side by side, x labelled `xlabel`.
pub fn lines(title: &str, xlabel: &str, panels: &[Panel]) -> String {
    let (ml, mr, mt, mb) = (52.0, 12.0, 56.0, 60.0);
    let width = PW * panels.len() as f64 + 12.0;
    let height = PH + 40.0;
    let mut s = header(width, height);
    let _ = writeln!(
        s,
        r#"<text x="8" y="20" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (p, panel) in panels.iter().enumerate() {
        let x0 = 6.0 + PW * p as f64;
        let (px, py, pw, ph) = (x0 + ml, mt, PW - ml - mr, PH - mt - mb + 24.0);
        let pts = || panel.series.iter().flat_map(|s| s.points.iter());
        let (xl, xh) = range(pts().map(|p| p.0));
        let (yl, yh) = if panel.unit {
            (0.0, 1.0)
        } else {
            range(pts().map(|p| p.1))
        };
        let sx = |x: f64| px + (x - xl) / (xh - xl) * pw;
        let sy = |y: f64| py + ph - (y - yl) / (yh - yl) * ph;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="40" font-size="12" font-weight="bold" text-anchor="middle">{}</text>"#,
            px + pw / 2.0,
            escape(&panel.title)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{px:.1}" y="{py:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#999"/>"##
        );
        for k in 0..=4 {
            let y = yl + (yh - yl) * k as f64 / 4.0;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"#,
                px - 4.0,
                sy(y) + 3.0,
                tick(y)
            );
        }
        let mut xs: Vec<f64> = pts().map(|p| p.0).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        for x in xs {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                sx(x),
                py + ph + 14.0,
                tick(x)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            px + pw / 2.0,
            py + ph + 30.0,
            escape(xlabel)
        );
        for (k, ser) in panel.series.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let mut pts = ser.points.clone();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for &(x, y) in &pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                    sx(x),
                    sy(y)
                );
            }
            let ly = py + ph + 44.0 + 13.0 * k as f64;
            let lx = px;
            let _ = writeln!(
                s,
                r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{ly:.1}" font-size="10">{}</text>"#,
                ly - 3.0,
                lx + 14.0,
                ly - 3.0,
                lx + 18.0,
                escape(&ser.name)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn header(w: f64, h: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_cells_carry_their_values_and_escape_labels() {
        let s = heatmaps(
            "E <test>",
            &["a&b".into()],
            &["c".into(), "d".into()],
            &[("E_OF".into(), vec![vec![Some(0.25), None]])],
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains(">0.25<") && s.contains(">-<"));
        assert!(s.contains("E &lt;test&gt;") && s.contains("a&amp;b"));
        assert_eq!(s.matches("<rect x=").count(), 2);
        // 0 is white, 1 the darkest red.
        assert_eq!(heat(0.0), "rgb(255,255,255)");
        assert_eq!(heat(1.0), "rgb(165,15,21)");
    }

    #[test]
    fn line_points_map_into_the_plot_area() {
        let s = lines(
            "t",
            "sparsity",
            &[Panel {
                title: "p".into(),
                series: vec![Series {
                    name: "A then B".into(),
                    points: vec![(0.5, 1.0), (0.25, 0.0)],
                }],
                unit: true,
            }],
        );
        // x 0.25..0.5 padded by 5%; y 0 at the bottom (py + ph = 56 + 138), 1 at the top (56).
        assert!(s.contains("cy=\"194.0\""), "{s}");
        assert!(s.contains("cy=\"56.0\""), "{s}");
        assert_eq!(s.matches("<circle").count(), 2);
    }
}
