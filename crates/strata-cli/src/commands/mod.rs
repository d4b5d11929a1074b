//! One module per subcommand.

pub mod caption;
pub mod dataset;
pub mod demo;
pub mod encode;
pub mod eval;
pub mod generate;
pub mod model;
pub mod prepare;
pub mod synth;
pub mod train;
