//! strata-eval: the paper's metrics, relation fidelity and the comparison report.
