//! Just enough SVG to draw the report's charts, written by hand: a document
//! of lines, polylines, rectangles and text, and a plot frame with linear,
//! logarithmic and "tail" scales. Pure string building.

use std::fmt::Write as _;

/// Horizontal text anchoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// Text starts at x.
    Start,
    /// Text is centred on x.
    Middle,
    /// Text ends at x.
    End,
}

impl Anchor {
    fn attr(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// How a line is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stroke<'a> {
    /// Colour.
    pub color: &'a str,
    /// Width in px.
    pub width: f64,
    /// Dash pattern (`"6 4"`), solid if `None`.
    pub dash: Option<&'a str>,
    /// Opacity in [0, 1].
    pub opacity: f64,
}

impl<'a> Stroke<'a> {
    /// A solid line.
    pub fn solid(color: &'a str, width: f64) -> Stroke<'a> {
        Stroke {
            color,
            width,
            dash: None,
            opacity: 1.0,
        }
    }

    /// The same, dashed.
    pub fn dashed(self, dash: &'a str) -> Stroke<'a> {
        Stroke {
            dash: Some(dash),
            ..self
        }
    }

    /// The same, translucent.
    pub fn faded(self, opacity: f64) -> Stroke<'a> {
        Stroke { opacity, ..self }
    }

    fn attrs(&self) -> String {
        let mut s = format!(
            r#"stroke="{}" stroke-width="{}""#,
            esc(self.color),
            num(self.width)
        );
        if let Some(d) = self.dash {
            let _ = write!(s, r#" stroke-dasharray="{}""#, esc(d));
        }
        if self.opacity < 1.0 {
            let _ = write!(s, r#" stroke-opacity="{}""#, num(self.opacity));
        }
        s
    }
}

/// An SVG document being written.
#[derive(Debug, Clone)]
pub struct Svg {
    out: String,
}

impl Svg {
    /// A `width` × `height` document on a white background.
    pub fn new(width: f64, height: f64) -> Svg {
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif">"#,
            w = num(width),
            h = num(height)
        );
        out.push('\n');
        let _ = writeln!(
            out,
            r#"<rect x="0" y="0" width="{}" height="{}" fill="white"/>"#,
            num(width),
            num(height)
        );
        Svg { out }
    }

    /// Text at (x, y) (y is the baseline).
    pub fn text(&mut self, x: f64, y: f64, size: f64, anchor: Anchor, fill: &str, s: &str) {
        let _ = writeln!(
            self.out,
            r#"<text x="{}" y="{}" font-size="{}" text-anchor="{}" fill="{}">{}</text>"#,
            num(x),
            num(y),
            num(size),
            anchor.attr(),
            esc(fill),
            esc(s)
        );
    }

    /// Bold text.
    pub fn title(&mut self, x: f64, y: f64, size: f64, s: &str) {
        let _ = writeln!(
            self.out,
            r#"<text x="{}" y="{}" font-size="{}" font-weight="bold" fill="black">{}</text>"#,
            num(x),
            num(y),
            num(size),
            esc(s)
        );
    }

    /// Text turned a quarter left, centred on (x, y) (for a y-axis label).
    pub fn vertical_text(&mut self, x: f64, y: f64, size: f64, fill: &str, s: &str) {
        let _ = writeln!(
            self.out,
            r#"<text x="{x}" y="{y}" font-size="{}" text-anchor="middle" fill="{}" transform="rotate(-90 {x} {y})">{}</text>"#,
            num(size),
            esc(fill),
            esc(s),
            x = num(x),
            y = num(y),
        );
    }

    /// A straight line.
    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: Stroke<'_>) {
        let _ = writeln!(
            self.out,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" {}/>"#,
            num(x1),
            num(y1),
            num(x2),
            num(y2),
            stroke.attrs()
        );
    }

    /// A polyline through `points` (nothing for fewer than two).
    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: Stroke<'_>) {
        if points.len() < 2 {
            return;
        }
        let pts: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{},{}", num(*x), num(*y)))
            .collect();
        let _ = writeln!(
            self.out,
            r#"<polyline fill="none" stroke-linejoin="round" {} points="{}"/>"#,
            stroke.attrs(),
            pts.join(" ")
        );
    }

    /// A filled rectangle.
    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, opacity: f64) {
        let _ = writeln!(
            self.out,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}" fill-opacity="{}"/>"#,
            num(x),
            num(y),
            num(w.max(0.0)),
            num(h.max(0.0)),
            esc(fill),
            num(opacity)
        );
    }

    /// The finished document.
    pub fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

/// How values map onto an axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// Linear from `min` to `max`.
    Linear {
        /// Value at the start of the axis.
        min: f64,
        /// Value at the end.
        max: f64,
    },
    /// Logarithmic from `min` to `max` (both above 0).
    Log {
        /// Value at the start of the axis.
        min: f64,
        /// Value at the end.
        max: f64,
    },
    /// Fractions in [0, 1) stretched toward 1: position ∝ −log10(1 − q),
    /// `decades` of them (2: up to 99%, 3: up to 99.9%).
    Tail {
        /// How many nines the axis reaches.
        decades: u32,
    },
}

impl Scale {
    /// Where `v` falls on the axis, 0 at the start and 1 at the end
    /// (clamped).
    pub fn frac(&self, v: f64) -> f64 {
        let f = match *self {
            Scale::Linear { min, max } => (v - min) / (max - min),
            Scale::Log { min, max } => (v.max(min).ln() - min.ln()) / (max.ln() - min.ln()),
            Scale::Tail { decades } => {
                -(1.0 - v.clamp(0.0, 1.0)).max(1e-12).log10() / f64::from(decades)
            }
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// Tick values and their labels.
    pub fn ticks(&self) -> Vec<(f64, String)> {
        match *self {
            Scale::Linear { min, max } => {
                let step = nice_step((max - min) / 8.0);
                let mut v = (min / step).ceil() * step;
                let mut out = Vec::new();
                while v <= max + step * 1e-9 && out.len() < 50 {
                    out.push((v, num_label(v)));
                    v += step;
                }
                out
            }
            Scale::Log { min, max } => {
                let mut out = Vec::new();
                let lo = min.log10().floor() as i32;
                let hi = max.log10().ceil() as i32;
                let decades = hi - lo;
                let mults: &[f64] = match decades {
                    0 | 1 => &[1.0, 1.5, 2.0, 3.0, 5.0, 7.0],
                    2..=4 => &[1.0, 2.0, 5.0],
                    _ => &[1.0],
                };
                for e in lo..=hi {
                    for m in mults {
                        let v = m * 10f64.powi(e);
                        if v >= min * (1.0 - 1e-9) && v <= max * (1.0 + 1e-9) {
                            out.push((v, num_label(v)));
                        }
                    }
                }
                out
            }
            Scale::Tail { decades } => {
                let mut out = vec![(0.0, "0%".to_owned()), (0.5, "50%".to_owned())];
                let mut nines = String::from("9");
                for d in 1..=decades {
                    let q = 1.0 - 10f64.powi(-(d as i32));
                    let label = if d == 1 {
                        "90%".to_owned()
                    } else {
                        nines.push('9');
                        format!("{}.{}%", &nines[..2], &nines[2..]).replace(".%", "%")
                    };
                    out.push((q, label));
                }
                out
            }
        }
    }
}

/// A plot area inside a document, with its two scales.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// Left edge, px.
    pub left: f64,
    /// Top edge, px.
    pub top: f64,
    /// Width, px.
    pub width: f64,
    /// Height, px.
    pub height: f64,
    /// Horizontal scale.
    pub x: Scale,
    /// Vertical scale.
    pub y: Scale,
}

impl Frame {
    /// Horizontal position of value `x`.
    pub fn px(&self, x: f64) -> f64 {
        self.left + self.x.frac(x) * self.width
    }

    /// Vertical position of value `y` (up is larger).
    pub fn py(&self, y: f64) -> f64 {
        self.top + (1.0 - self.y.frac(y)) * self.height
    }

    /// Bottom edge, px.
    pub fn bottom(&self) -> f64 {
        self.top + self.height
    }

    /// Grid, ticks, tick labels and axis labels.
    pub fn axes(&self, svg: &mut Svg, x_label: &str, y_label: &str) {
        let grid = Stroke::solid("#dddddd", 1.0);
        let axis = Stroke::solid("#333333", 1.0);
        for (v, label) in self.x.ticks() {
            let x = self.px(v);
            svg.line(x, self.top, x, self.bottom(), grid);
            svg.line(x, self.bottom(), x, self.bottom() + 4.0, axis);
            svg.text(
                x,
                self.bottom() + 16.0,
                11.0,
                Anchor::Middle,
                "#333333",
                &label,
            );
        }
        for (v, label) in self.y.ticks() {
            let y = self.py(v);
            svg.line(self.left, y, self.left + self.width, y, grid);
            svg.line(self.left - 4.0, y, self.left, y, axis);
            svg.text(
                self.left - 7.0,
                y + 4.0,
                11.0,
                Anchor::End,
                "#333333",
                &label,
            );
        }
        svg.line(
            self.left,
            self.bottom(),
            self.left + self.width,
            self.bottom(),
            axis,
        );
        svg.line(self.left, self.top, self.left, self.bottom(), axis);
        svg.text(
            self.left + self.width / 2.0,
            self.bottom() + 52.0,
            12.0,
            Anchor::Middle,
            "#000000",
            x_label,
        );
        svg.vertical_text(
            self.left - 48.0,
            self.top + self.height / 2.0,
            12.0,
            "#000000",
            y_label,
        );
    }

    /// A legend under the plot (below the x-axis label), in two columns:
    /// a line sample and a label per entry.
    pub fn legend(&self, svg: &mut Svg, entries: &[(String, Stroke<'_>)]) {
        let col = self.width / 2.0;
        for (i, (label, stroke)) in entries.iter().enumerate() {
            let x = self.left + col * (i % 2) as f64;
            let y = self.bottom() + LEGEND_TOP + 17.0 * (i / 2) as f64;
            svg.line(x, y - 4.0, x + 26.0, y - 4.0, *stroke);
            svg.text(x + 32.0, y, 11.0, Anchor::Start, "#000000", label);
        }
    }
}

/// Space between the plot's bottom edge and the first legend row, px.
pub const LEGEND_TOP: f64 = 72.0;

/// The largest 1, 2 or 5 times a power of ten at or below `v` (> 0).
pub fn nice_floor(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 || v.is_infinite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * p)
        .find(|x| *x <= v * (1.0 + 1e-9))
        .unwrap_or(p)
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw.is_nan() || raw <= 0.0 || raw.is_infinite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// A tick label: no trailing zeros, thousands as `k`.
fn num_label(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        return format!("{}k", num_label(v / 1000.0));
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_owned()
    }
}

/// A coordinate: two decimals at most.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "0".into();
    }
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".into()
    } else {
        s.to_owned()
    }
}

/// Escapes text and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Checks that `doc` is well-formed XML as far as this writer produces it:
/// balanced tags, quoted attributes, escaped text. For tests.
#[cfg(test)]
pub(crate) fn well_formed(doc: &str) -> Result<usize, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut elements = 0;
    let mut rest = doc;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        if text.contains('>') {
            return Err(format!("stray '>' in text: {text:?}"));
        }
        let close = rest[open..].find('>').ok_or("unterminated tag")? + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if !tag.matches('"').count().is_multiple_of(2) {
            return Err(format!("unbalanced quotes in <{tag}>"));
        }
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(open) if open == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        } else {
            elements += 1;
            let name = tag
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches('/');
            if name.is_empty() {
                return Err("empty tag".into());
            }
            if !tag.ends_with('/') {
                stack.push(name.to_owned());
            }
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed: {stack:?}"));
    }
    if !rest.trim().is_empty() {
        return Err(format!("trailing text: {rest:?}"));
    }
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_well_formed_and_escaped() {
        let mut s = Svg::new(200.0, 100.0);
        s.text(1.0, 2.0, 10.0, Anchor::Start, "black", "a < b & \"c\"");
        s.polyline(
            &[(0.0, 0.0), (1.5, 2.25)],
            Stroke::solid("red", 2.0).dashed("4 2"),
        );
        s.polyline(&[(0.0, 0.0)], Stroke::solid("red", 2.0));
        s.rect(0.0, 0.0, 10.0, 10.0, "blue", 0.5);
        s.vertical_text(5.0, 50.0, 10.0, "black", "y");
        let doc = s.finish();
        assert!(doc.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(doc.contains("a &lt; b &amp; &quot;c&quot;"));
        assert!(doc.contains(r#"points="0,0 1.5,2.25""#));
        assert_eq!(
            doc.matches("<polyline").count(),
            1,
            "a single point draws nothing"
        );
        assert_eq!(well_formed(&doc), Ok(6));
        assert!(well_formed("<svg><g></svg>").is_err());
        assert!(well_formed("<svg>a > b</svg>").is_err());
    }

    #[test]
    fn scales_map_and_tick() {
        let lin = Scale::Linear {
            min: 0.0,
            max: 30.0,
        };
        assert_eq!(lin.frac(15.0), 0.5);
        assert_eq!(lin.frac(-5.0), 0.0);
        let t: Vec<String> = lin.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(t, ["0", "5", "10", "15", "20", "25", "30"]);
        assert_eq!(nice_floor(52.0), 50.0);
        assert_eq!(nice_floor(0.31), 0.2);
        assert_eq!(nice_floor(1.0), 1.0);

        let log = Scale::Log {
            min: 1.0,
            max: 1000.0,
        };
        assert!((log.frac(10.0) - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(log.frac(0.0), 0.0);
        let t: Vec<String> = log.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(
            t,
            ["1", "2", "5", "10", "20", "50", "100", "200", "500", "1000"]
        );

        let tail = Scale::Tail { decades: 3 };
        assert!((tail.frac(0.99) - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(tail.frac(1.0), 1.0);
        let t: Vec<String> = tail.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(t, ["0%", "50%", "90%", "99%", "99.9%"]);
        assert_eq!(num_label(25_000.0), "25k");
        assert_eq!(num_label(0.5), "0.5");
    }

    #[test]
    fn frames_put_larger_values_higher() {
        let f = Frame {
            left: 50.0,
            top: 10.0,
            width: 100.0,
            height: 100.0,
            x: Scale::Linear { min: 0.0, max: 1.0 },
            y: Scale::Linear { min: 0.0, max: 1.0 },
        };
        assert_eq!((f.px(0.0), f.py(0.0)), (50.0, 110.0));
        assert_eq!((f.px(1.0), f.py(1.0)), (150.0, 10.0));
        let mut s = Svg::new(200.0, 200.0);
        f.axes(&mut s, "x", "y");
        f.legend(&mut s, &[("one".into(), Stroke::solid("red", 1.0))]);
        assert!(well_formed(&s.finish()).is_ok());
    }
}
