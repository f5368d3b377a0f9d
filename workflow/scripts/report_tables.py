# Rule report_tables: copy each table's CSV into results/report_tables/ for the Snakemake report.
# The CSV written beside each Parquet table (compbias.io.write_parquet, csv=True) is complete
# whenever the Parquet file exists.
from pathlib import Path

from compbias.io import copy_file
from compbias.logs import log_to

with log_to(snakemake.log[0]) as log:
    for table in snakemake.params.tables:
        src = Path(snakemake.input[table]).with_suffix(".csv")
        if not src.exists():
            raise FileNotFoundError(f"{src}: missing (written with {snakemake.input[table]}); rerun its rule")
        log.info("%s -> %s", src, copy_file(src, snakemake.output[table]))
