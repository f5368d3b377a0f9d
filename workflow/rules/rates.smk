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
    script:
        "../scripts/rates.py"
