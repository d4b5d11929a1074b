//! The HTML report writer: a [`Document`] collects headings, paragraphs, lists, tables,
//! inline SVG and embedded PNG images, renders one self-contained page (styles inline, images
//! as `data:` URIs, so the file can be mailed or archived alone) and writes it atomically.
//!
//! Text given as `&str` is always escaped. Methods and helpers whose name ends in `_html`
//! take markup the caller built; build it from [`esc`], [`code`], [`bold`] and [`img_png`]
//! so every piece of user text still goes through [`esc`].

use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// Escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    strata_io::html::escape(s)
}

/// `<code>text</code>`, escaped.
pub fn code(s: &str) -> String {
    format!("<code>{}</code>", esc(s))
}

/// `<b>text</b>`, escaped.
pub fn bold(s: &str) -> String {
    format!("<b>{}</b>", esc(s))
}

/// A `data:image/png;base64,…` URI for PNG bytes.
pub fn png_data_uri(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", strata_io::base64::encode(png))
}

/// An `<img>` showing PNG bytes at `width`×`height` CSS pixels.
pub fn img_png(png: &[u8], width: usize, height: usize) -> String {
    format!(
        "<img src=\"{}\" width={width} height={height}>",
        png_data_uri(png)
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td.l{text-align:left}.nc{color:#999}img{image-rendering:pixelated;border:1px solid #ccc}.grid td{text-align:center;vertical-align:top}.note{font-size:12px;color:#555}";

/// One table cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    html: String,
    class: Option<&'static str>,
    title: Option<String>,
}

impl Cell {
    /// Left-aligned text (`<td class=l>`).
    pub fn text(s: &str) -> Cell {
        Cell {
            html: esc(s),
            class: Some("l"),
            title: None,
        }
    }

    /// A right-aligned value (numbers).
    pub fn value(s: &str) -> Cell {
        Cell {
            html: esc(s),
            class: None,
            title: None,
        }
    }

    /// Greyed-out text: a value that is missing (`n/c`, `missing`).
    pub fn muted(s: &str) -> Cell {
        Cell {
            html: esc(s),
            class: Some("nc"),
            title: None,
        }
    }

    /// An empty cell.
    pub fn empty() -> Cell {
        Cell::value("")
    }

    /// Markup the caller built (an image, bold text).
    pub fn html(h: String) -> Cell {
        Cell {
            html: h,
            class: None,
            title: None,
        }
    }

    /// Adds a tooltip (the `title` attribute, escaped).
    pub fn with_title(mut self, title: &str) -> Cell {
        self.title = Some(title.to_string());
        self
    }

    fn render(&self, out: &mut String) {
        out.push_str("<td");
        if let Some(c) = self.class {
            let _ = write!(out, " class={c}");
        }
        if let Some(t) = &self.title {
            let _ = write!(out, " title=\"{}\"", esc(t));
        }
        let _ = write!(out, ">{}</td>", self.html);
    }
}

/// A table: a header row and rows of cells.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<Cell>>,
    class: Option<&'static str>,
}

impl Table {
    /// A table with these column headings (escaped).
    pub fn new<S: AsRef<str>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(|h| h.as_ref().to_string()).collect(),
            ..Table::default()
        }
    }

    /// Sets the table's CSS class (`grid`: centred image cells).
    pub fn class(mut self, class: &'static str) -> Table {
        self.class = Some(class);
        self
    }

    pub fn row(&mut self, cells: Vec<Cell>) -> &mut Table {
        self.rows.push(cells);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as HTML.
    pub fn render(&self) -> String {
        let mut out = String::from("<table");
        if let Some(c) = self.class {
            let _ = write!(out, " class={c}");
        }
        out.push_str("><tr>");
        for h in &self.header {
            let _ = write!(out, "<th>{}</th>", esc(h));
        }
        out.push_str("</tr>");
        for r in &self.rows {
            out.push_str("<tr>");
            for c in r {
                c.render(&mut out);
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
        out
    }
}

/// An HTML page under construction.
#[derive(Debug, Clone)]
pub struct Document {
    title: String,
    body: String,
}

impl Document {
    /// An empty page with this `<title>`.
    pub fn new(title: &str) -> Document {
        Document {
            title: title.to_string(),
            body: String::new(),
        }
    }

    pub fn h1(&mut self, text: &str) -> &mut Document {
        let _ = write!(self.body, "<h1>{}</h1>", esc(text));
        self
    }

    pub fn h2(&mut self, text: &str) -> &mut Document {
        let _ = write!(self.body, "<h2>{}</h2>", esc(text));
        self
    }

    /// A paragraph of plain text.
    pub fn p(&mut self, text: &str) -> &mut Document {
        let _ = write!(self.body, "<p>{}</p>", esc(text));
        self
    }

    /// A paragraph of caller-built markup.
    pub fn p_html(&mut self, html: &str) -> &mut Document {
        let _ = write!(self.body, "<p>{html}</p>");
        self
    }

    /// A small grey paragraph (caveats, protocol remarks).
    pub fn note(&mut self, text: &str) -> &mut Document {
        let _ = write!(self.body, "<p class=note>{}</p>", esc(text));
        self
    }

    /// A bulleted list of plain-text items.
    pub fn list<S: AsRef<str>>(&mut self, items: impl IntoIterator<Item = S>) -> &mut Document {
        self.list_html(items.into_iter().map(|i| esc(i.as_ref())), false)
    }

    /// A bulleted list of caller-built items; `small` = note style.
    pub fn list_html<S: AsRef<str>>(
        &mut self,
        items: impl IntoIterator<Item = S>,
        small: bool,
    ) -> &mut Document {
        self.body
            .push_str(if small { "<ul class=note>" } else { "<ul>" });
        for i in items {
            let _ = write!(self.body, "<li>{}</li>", i.as_ref());
        }
        self.body.push_str("</ul>");
        self
    }

    pub fn table(&mut self, t: &Table) -> &mut Document {
        self.body.push_str(&t.render());
        self
    }

    /// An SVG drawing inline (from [`crate::chart`]).
    pub fn svg(&mut self, svg: &str) -> &mut Document {
        self.body.push_str(svg);
        self
    }

    /// A horizontal rule between parts of the page.
    pub fn rule(&mut self) -> &mut Document {
        self.body.push_str("<hr>");
        self
    }

    /// The whole page.
    pub fn render(&self) -> String {
        format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>{}</body></html>\n",
            esc(&self.title),
            self.body
        )
    }

    /// Writes the page to `path` atomically (a temporary file in the same folder, renamed).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        strata_io::atomic::write(path, self.render().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_markup_kept() {
        let mut d = Document::new("a <b> report");
        d.h1("x & y").p_html(&format!("see {}", code("<dir>")));
        let mut t = Table::new(["Method", "<i>"]);
        t.row(vec![
            Cell::text("flat"),
            Cell::value("1.5").with_title("\"why\""),
            Cell::muted("n/c"),
        ]);
        d.table(&t);
        let h = d.render();
        assert!(h.contains("<title>a &lt;b&gt; report</title>"), "{h}");
        assert!(h.contains("<h1>x &amp; y</h1>"));
        assert!(h.contains("<p>see <code>&lt;dir&gt;</code></p>"));
        assert!(h.contains("<th>&lt;i&gt;</th>"));
        assert!(h.contains(
            "<tr><td class=l>flat</td><td title=\"&quot;why&quot;\">1.5</td><td class=nc>n/c</td></tr>"
        ));
        assert!(h.starts_with("<!DOCTYPE html>") && h.ends_with("</body></html>\n"));
    }

    #[test]
    fn images_are_embedded_as_base64_png() {
        // the 8-byte PNG signature, base64 by hand (RFC 4648): iVBORw0KGgo=
        let s = img_png(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a], 4, 4);
        assert_eq!(
            s,
            "<img src=\"data:image/png;base64,iVBORw0KGgo=\" width=4 height=4>"
        );
    }

    #[test]
    fn write_replaces_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/report.html");
        Document::new("one").write(&p).unwrap();
        Document::new("two").write(&p).unwrap();
        let h = std::fs::read_to_string(&p).unwrap();
        assert!(h.contains("<title>two</title>"));
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
