# Figures, the Markdown summary and the tables shown in the Snakemake report
# (snakemake --report report.html, whose front page is workflow/report/workflow.rst).

FIGURE_LABELS = {
    "dose_response": "answer roles vs precision",
    "transitions": "emergence, expected range, direction",
    "perplexity_vs_bias": "perplexity vs bias",
    "category_heatmap": "categories x variants",
    "pruning": "pruning vs sparsity",
}
HAS_PRUNING = any(variant_kind(spec) == "prune" for spec in config["variants"].values())
# tables copied to results/report_tables/ and shown in the report (rates is results/rates.csv,
# the others results/analysis/{table}.csv)
REPORT_TABLES = (
    [
        "rates",
        "transitions",
        "expected_emergence",
        "direction_tests",
        "excess_emergence",
        "bias_scores",
        "regression_coefficients",
    ]
    + (["disambiguated"] if "disambig" in config["dataset"]["conditions"] else [])
    + (["perplexity"] if PERPLEXITY else [])
    + (["sparsity_coefficients"] if HAS_PRUNING else [])
)

# analysis tables the summary reads
SUMMARY_TABLES = [
    t
    for t in ANALYSIS_TABLES
    if t
    in (
        "transitions",
        "expected_emergence",
        "direction_tests",
        "noise_floor",
        "bias_scores",
        "disambiguated",
        "regression_coefficients",
        "regression_tests",
        "role_flows",
        "sparsity_coefficients",
        "sparsity_tests",
        "perplexity",
    )
]


rule figures:
    input:
        rates="results/rates.parquet",
        variants="results/variants.parquet",
        transitions="results/analysis/transitions.parquet",
        noise_floor="results/analysis/noise_floor.parquet",
        expected="results/analysis/expected_emergence.parquet",
        direction="results/analysis/direction_tests.parquet",
        perplexity=["results/analysis/perplexity.parquet"] if PERPLEXITY else [],
    output:
        **{
            name: report(
                f"results/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Figures",
                labels={"figure": FIGURE_LABELS[name]},
            )
            for name in FIGURES
        },
        pdf=expand("results/figures/{name}.pdf", name=FIGURES),
    log:
        "logs/figures.log",
    benchmark:
        "results/benchmarks/figures.tsv"
    params:
        baseline=BASELINE,
        variants_cfg=config["variants"],
    script:
        "../scripts/figures.py"


rule report_tables:
    input:
        **{table: report_table_source(table) for table in REPORT_TABLES},
    output:
        **{
            table: report(
                f"results/report_tables/{table}.csv",
                caption=f"../report/table_{table}.rst",
                category="Tables",
                labels={"table": table},
            )
            for table in REPORT_TABLES
        },
    log:
        "logs/report_tables.log",
    benchmark:
        "results/benchmarks/report_tables.tsv"
    params:
        tables=REPORT_TABLES,
    script:
        "../scripts/report_tables.py"


rule summary:
    input:
        **{table: f"results/analysis/{table}.parquet" for table in SUMMARY_TABLES},
        # not read: depending on them puts the report tables in the DAG of `all`, so that
        # `snakemake --report` includes them
        rates="results/rates.parquet",
        variants="results/variants.parquet",
        report_tables=expand("results/report_tables/{table}.csv", table=REPORT_TABLES),
    output:
        report("results/summary.md", caption="../report/summary.rst", category="Summary"),
    log:
        "logs/summary.log",
    benchmark:
        "results/benchmarks/summary.tsv"
    params:
        baseline=BASELINE,
        variants_cfg=config["variants"],
    script:
        "../scripts/summary.py"
