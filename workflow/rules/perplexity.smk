rule perplexity_corpus:
    input:
        checkpoint=lambda wc: checkpoint_dir(wc.model, BASELINE),
    output:
        "results/perplexity/{model}/corpus.parquet",
    params:
        cfg=config["perplexity"],
    log:
        "logs/perplexity/{model}/corpus.log",
    script:
        "../scripts/perplexity_corpus.py"


rule perplexity:
    input:
        corpus="results/perplexity/{model}/corpus.parquet",
        checkpoint=lambda wc: checkpoint_dir(wc.model, wc.variant),
    output:
        "results/perplexity/{model}/{variant}.parquet",
    params:
        runtime=config["runtime"],
        batch_size=config["perplexity"]["batch_size"],
    log:
        "logs/perplexity/{model}/{variant}.log",
    benchmark:
        "results/benchmarks/perplexity/{model}/{variant}.tsv"
    threads: config["runtime"]["threads"]
    script:
        "../scripts/perplexity.py"
