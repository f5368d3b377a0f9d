"""Names of the analysis tables: a light module (no statistics imported), so that the workflow
can name the tables while it builds the DAG."""

#: Table name -> what it holds (README and report captions use these names).
TABLES = (
    "bias_scores",
    "disambiguated",
    "items_by_variant",
    "transitions",
    "role_flows",
    "noise_floor",
    "excess_emergence",
    "expected_emergence",
    "direction_tests",
    "probability_shift_items",
    "probability_shifts",
    "paired_tests",
    "regression_coefficients",
    "regression_tests",
    "transition_model",
    "sparsity_coefficients",
    "sparsity_tests",
    "perplexity",
)
