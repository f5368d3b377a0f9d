rule rates:
    input:
        "results/answers.parquet",
    output:
        parquet="results/rates.parquet",
        csv="results/rates.csv",
    log:
        "logs/rates.log",
    benchmark:
        "results/benchmarks/rates.tsv"
    resources:
        mem_mb=config["cluster"]["light_mem_mb"],
        runtime=config["cluster"]["light_runtime"],
    script:
        "../scripts/rates.py"
