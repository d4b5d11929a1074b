//! strata-caption: hierarchical captions {scene, relation, elements}, the spatial relation
//! knowledge collection (SRKC), relation extraction, expert corrections and dataset formats.
//!
//! Section 3.1.2 of the paper. No ML dependencies: the networks plug in through traits.

pub mod caption;
pub mod dataset;

pub use caption::HierarchicalCaption;
pub use dataset::MetadataRecord;
