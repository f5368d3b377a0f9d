rule perplexity_corpus:
    input:
        checkpoint=lambda wc: checkpoint_dir(wc.model, BASELINE),
    output:
        "results/perplexity/{model}/corpus.parquet",
    log:
        "logs/perplexity/{model}/corpus.log",
    benchmark:
        "results/benchmarks/perplexity_corpus/{model}.tsv"
    resources:
        mem_mb=config["cluster"]["light_mem_mb"],
        runtime=config["cluster"]["light_runtime"],
    params:
        cfg=config["perplexity"],
    script:
        "../scripts/perplexity_corpus.py"


rule perplexity:
    input:
        corpus="results/perplexity/{model}/corpus.parquet",
        checkpoint=lambda wc: checkpoint_dir(wc.model, wc.variant),
    output:
        "results/perplexity/{model}/{variant}.parquet",
    log:
        "logs/perplexity/{model}/{variant}.log",
    benchmark:
        "results/benchmarks/perplexity/{model}/{variant}.tsv"
    threads: config["runtime"]["threads"]
    resources:
        mem_mb=config["cluster"]["model_mem_mb"],
        runtime=config["cluster"]["model_runtime"],
        gpu=config["cluster"]["gpu"],
        gpu_mem_mb=gpu_mem("perplexity"),
    params:
        batch_size=config["perplexity"]["batch_size"],
    script:
        "../scripts/perplexity.py"
