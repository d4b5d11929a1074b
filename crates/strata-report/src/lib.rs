//! strata's report writer and charts, shared by every command that writes something for
//! people to read:
//!
//! - [`html`]: one HTML document builder ([`html::Document`]: title, headings, paragraphs,
//!   lists, [`html::Table`]s, inline SVG, PNG images embedded as `data:` URIs) written
//!   atomically. `strata eval` and `strata study` (and so `strata demo`) write their
//!   `report.html` with it.
//! - [`chart`]: SVG line and grouped-bar charts with axes, "nice" ticks, axis labels and a
//!   legend. The relation-fidelity bars of the eval report and `strata encode --plot` (fusion weights over the timesteps) are drawn with it.
//!
//! Why our own and not a plotting crate: the charts are a few hundred lines of SVG text with
//! no native dependencies (plotters pulls font rendering and image backends into a crate
//! the whole CLI links), the output is deterministic text that tests parse, and the same
//! SVG goes inline into the HTML reports and into standalone `.svg` files. Escaping,
//! base64 and atomic writes come from `strata-io`, like everywhere else in strata.

pub mod chart;
pub mod html;

pub use chart::{BarChart, LineChart, Series};
pub use html::{Cell, Document, Table};
