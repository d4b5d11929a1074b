//! strata-synth
