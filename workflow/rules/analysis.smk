rule virtual_seeds:
    # first tokens of analysis.expected_sets virtual seed sets, drawn from the stored scores
    input:
        items_table="results/items.parquet",
        scores=lambda wc: score_shards(wc.model, wc.variant),
    output:
        "results/virtual_seeds/{model}/{variant}.parquet",
    params:
        rng=config["decoding"].get("rng", "gumbel"),
        n_sets=config["analysis"]["expected_sets"],
        seeds=SEEDS,
        placebo_seeds=PLACEBO_SEEDS,
    log:
        "logs/virtual_seeds/{model}/{variant}.log",
    benchmark:
        "results/benchmarks/virtual_seeds/{model}/{variant}.tsv"
    threads: config["runtime"]["threads"]
    resources:
        mem_mb=config["cluster"]["light_mem_mb"],
        runtime=config["cluster"]["analysis_runtime"],
    script:
        "../scripts/virtual_seeds.py"


rule analysis:
    input:
        answers="results/answers.parquet",
        items_table="results/items.parquet",
        variants="results/variants.parquet",
        perplexity=perplexity_tables(),
        virtual=virtual_seed_tables(),
    output:
        expand("results/analysis/{table}.parquet", table=ANALYSIS_TABLES),
    params:
        baseline=BASELINE,
        n_seeds=len(SEEDS),
        cfg=config["analysis"],
        variants_cfg=config["variants"],
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
