from compbias.inference.merge import variants_table
from compbias.io import write_parquet
from compbias.logs import log_to

with log_to(snakemake.log[0]):
    table = variants_table(snakemake.input, snakemake.params.variants, snakemake.params.baseline)
    write_parquet(table, snakemake.output[0], csv=True)
