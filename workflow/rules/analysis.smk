rule analysis:
    input:
        answers="results/answers.parquet",
        items_table="results/items.parquet",
        variants="results/variants.parquet",
        perplexity=perplexity_tables(),
    output:
        expand("results/analysis/{table}.parquet", table=ANALYSIS_TABLES),
    params:
        baseline=BASELINE,
        n_seeds=len(SEEDS),
        cfg=config["analysis"],
        outdir="results/analysis",
    log:
        "logs/analysis.log",
    benchmark:
        "results/benchmarks/analysis.tsv"
    resources:
        mem_mb=config["cluster"]["analysis_mem_mb"],
        runtime=config["cluster"]["analysis_runtime"],
    script:
        "../scripts/analysis.py"
