rule scores:
    input:
        items_table="results/items.parquet",
        checkpoint=lambda wc: checkpoint_dir(wc.model, wc.variant),
    output:
        # update: kept until its replacement is written (restored if the job fails)
        update("results/scores/{model}/{variant}/{group}/shard={shard}.parquet"),
    log:
        "logs/scores/{model}/{variant}/{group}/shard={shard}.log",
    benchmark:
        "results/benchmarks/scores/{model}/{variant}/{group}/shard={shard}.tsv"
    priority: scores_priority
    threads: config["runtime"]["threads"]
    resources:
        mem_mb=config["cluster"]["model_mem_mb"],
        runtime=config["cluster"]["model_runtime"],
        gpu=config["cluster"]["gpu"],
        gpu_mem_mb=gpu_mem("scores"),
    params:
        decoding=config["decoding"],
        prompt=config["prompt"],
    script:
        "../scripts/scores.py"


rule answers:
    input:
        items_table="results/items.parquet",
        scores=lambda wc: f"results/scores/{wc.model}/{wc.variant}/{score_group(wc.seed)}/shard={wc.shard}.parquet",
        checkpoint=lambda wc: checkpoint_dir(wc.model, wc.variant),
    output:
        update("results/answers/{model}/{variant}/seed={seed}/shard={shard}.parquet"),
    log:
        "logs/answers/{model}/{variant}/seed={seed}/shard={shard}.log",
    benchmark:
        "results/benchmarks/answers/{model}/{variant}/seed={seed}/shard={shard}.tsv"
    group:
        "answers"
    threads: config["runtime"]["threads"]
    resources:
        mem_mb=config["cluster"]["model_mem_mb"],
        runtime=config["cluster"]["model_runtime"],
        gpu=config["cluster"]["gpu"],
        gpu_mem_mb=gpu_mem("answers"),
    params:
        decoding=config["decoding"],
        prompt=config["prompt"],
    script:
        "../scripts/answers.py"


rule merge:
    input:
        items_table="results/items.parquet",
        shards=answer_shards(),
    output:
        # the previous merged table stays until every shard has been checked and the new one
        # written (restored if the merge fails)
        update("results/answers.parquet"),
    log:
        "logs/merge.log",
    benchmark:
        "results/benchmarks/merge.tsv"
    resources:
        mem_mb=config["cluster"]["light_mem_mb"],
        runtime=config["cluster"]["light_runtime"],
    params:
        models=MODELS,
        variants=VARIANTS,
        seeds=SEEDS,
        placebo_seeds=PLACEBO_SEEDS,
        baseline=BASELINE,
        shards=config["shards"],
    script:
        "../scripts/merge.py"
