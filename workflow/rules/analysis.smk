rule virtual_seeds:
    # first tokens of analysis.expected_sets virtual seed sets, drawn from one stored scores shard
    input:
        items_table="results/items.parquet",
        scores=lambda wc: score_shards(wc.model, wc.variant, wc.shard),
    output:
        "results/virtual_seeds/{model}/{variant}/shard={shard}.parquet",
    log:
        "logs/virtual_seeds/{model}/{variant}/shard={shard}.log",
    benchmark:
        "results/benchmarks/virtual_seeds/{model}/{variant}/shard={shard}.tsv"
    priority: virtual_seeds_priority
    threads: config["runtime"]["threads"]
    resources:
        mem_mb=config["cluster"]["light_mem_mb"],
        runtime=config["cluster"]["analysis_runtime"],
    params:
        rng=config["decoding"]["rng"],
        n_sets=config["analysis"]["expected_sets"],
        seeds=SEEDS,
        placebo_seeds=PLACEBO_SEEDS,
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
    log:
        "logs/analysis.log",
    benchmark:
        "results/benchmarks/analysis.tsv"
    resources:
        mem_mb=config["cluster"]["analysis_mem_mb"],
        runtime=config["cluster"]["analysis_runtime"],
    params:
        baseline=BASELINE,
        n_seeds=len(SEEDS),
        cfg=config["analysis"],
        variants_cfg=config["variants"],
        # the directory of the tables (analysis.py writes every table there)
        outdir=lambda wc, output: str(Path(output[0]).parent),
    script:
        "../scripts/analysis.py"
