from compbias.io import read_parquet, write_parquet
from compbias.logs import log_to
from compbias.stats.metrics import rates

with log_to(snakemake.log[0]):
    write_parquet(rates(read_parquet(snakemake.input[0])), snakemake.output.parquet, csv=True)
