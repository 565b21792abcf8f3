//! For the renderers' tests: the text elements of an SVG, and whether each
//! lies inside the canvas (by [`super::axis::text_width`]'s estimate).

use super::axis::text_width;

/// One `<text>`: where it is anchored, how it is drawn, what it says.
#[derive(Debug)]
pub struct Text {
    pub class: String,
    pub x: f64,
    pub y: f64,
    pub anchor: String,
    pub size: f64,
    pub bold: bool,
    /// Degrees, from `transform="rotate(a …)"`.
    pub rotate: f64,
    pub text: String,
}

impl Text {
    /// (left, right) in x of the text as drawn (a rotated text's ends).
    pub fn x_extent(&self) -> (f64, f64) {
        let w = text_width(&self.text, self.size, self.bold);
        let (a, b) = match self.anchor.as_str() {
            "middle" => (-w / 2.0, w / 2.0),
            "end" => (-w, 0.0),
            _ => (0.0, w),
        };
        let c = self.rotate.to_radians().cos();
        let (a, b) = (self.x + a * c, self.x + b * c);
        (a.min(b), a.max(b))
    }

    /// (top, bottom) in y: the baseline less the font's ascent, or a
    /// rotated text's ends.
    pub fn y_extent(&self) -> (f64, f64) {
        if self.rotate == 0.0 {
            return (self.y - 0.8 * self.size, self.y + 0.25 * self.size);
        }
        let w = text_width(&self.text, self.size, self.bold);
        let (a, b) = match self.anchor.as_str() {
            "middle" => (-w / 2.0, w / 2.0),
            "end" => (-w, 0.0),
            _ => (0.0, w),
        };
        let sn = self.rotate.to_radians().sin();
        let (a, b) = (self.y + a * sn, self.y + b * sn);
        (a.min(b), a.max(b))
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[at..].find('"')?;
    Some(tag[at..at + len].to_string())
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// The root's width and height.
pub fn size(svg: &str) -> (f64, f64) {
    let root = &svg[..svg.find('>').expect("a root tag")];
    let num = |n: &str| attr(root, n).and_then(|v| v.parse().ok()).expect(n);
    (num("width"), num("height"))
}

/// Every `<text>` in document order; font size from the element or the root.
pub fn texts(svg: &str) -> Vec<Text> {
    let root = &svg[..svg.find('>').expect("a root tag")];
    let root_size: f64 = attr(root, "font-size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(16.0);
    let mut out = Vec::new();
    for piece in svg.split("<text").skip(1) {
        let close = piece.find('>').expect("a text tag");
        let tag = &piece[..close];
        let text = &piece[close + 1..piece.find("</text>").expect("a closed text")];
        let num = |n: &str| attr(tag, n).and_then(|v| v.parse::<f64>().ok());
        let rotate = attr(tag, "transform")
            .and_then(|t| {
                let inner = t.strip_prefix("rotate(")?;
                inner.split([' ', ')']).next()?.parse().ok()
            })
            .unwrap_or(0.0);
        out.push(Text {
            class: attr(tag, "class").unwrap_or_default(),
            x: num("x").unwrap_or(0.0),
            y: num("y").unwrap_or(0.0),
            anchor: attr(tag, "text-anchor").unwrap_or_else(|| "start".into()),
            size: num("font-size").unwrap_or(root_size),
            bold: attr(tag, "font-weight").is_some_and(|w| w == "bold"),
            rotate,
            text: unescape(text),
        });
    }
    out
}

/// The texts of one class, in document order.
pub fn class(svg: &str, class: &str) -> Vec<String> {
    texts(svg)
        .into_iter()
        .filter(|t| t.class == class)
        .map(|t| t.text)
        .collect()
}

/// Panics, naming the text, where one would be cut at an edge.
pub fn nothing_cut(svg: &str) {
    let (w, h) = size(svg);
    for t in texts(svg) {
        let (l, r) = t.x_extent();
        let (top, bottom) = t.y_extent();
        assert!(
            l >= 0.0 && r <= w && top >= 0.0 && bottom <= h,
            "{t:?} reaches x {l:.1}..{r:.1}, y {top:.1}..{bottom:.1}, outside {w} × {h}"
        );
    }
}
