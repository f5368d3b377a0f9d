rule perplexity_corpus:
    input:
        checkpoint=lambda wc: checkpoint_dir(wc.model, BASELINE),
    output:
        "results/perplexity/{model}/corpus.parquet",
    params:
        cfg=config["perplexity"],
    log:
        "logs/perplexity/{model}/corpus.log",
    resources:
        mem_mb=config["cluster"]["light_mem_mb"],
        runtime=config["cluster"]["light_runtime"],
    script:
        "../scripts/perplexity_corpus.py"


rule perplexity:
    input:
        corpus="results/perplexity/{model}/corpus.parquet",
        checkpoint=lambda wc: checkpoint_dir(wc.model, wc.variant),
    output:
        "results/perplexity/{model}/{variant}.parquet",
    params:
        batch_size=config["perplexity"]["batch_size"],
    log:
        "logs/perplexity/{model}/{variant}.log",
    benchmark:
        "results/benchmarks/perplexity/{model}/{variant}.tsv"
    threads: config["runtime"]["threads"]
    resources:
        mem_mb=config["cluster"]["model_mem_mb"],
        runtime=config["cluster"]["model_runtime"],
        gpu=config["cluster"]["gpu"],
    script:
        "../scripts/perplexity.py"
