# Rule report_tables: copy each table's CSV into results/report_tables/ for the Snakemake report.
# The CSV written beside each Parquet table (compbias.io.write_parquet, csv=True) is complete
# whenever the Parquet file exists; it is copied via a temporary name.
import os
import shutil
from pathlib import Path

from compbias.io import temp_path
from compbias.logs import log_to

with log_to(snakemake.log[0]) as log:
    for table in snakemake.params.tables:
        src = Path(snakemake.input[table]).with_suffix(".csv")
        if not src.exists():
            raise FileNotFoundError(f"{src}: missing (written with {snakemake.input[table]}); rerun its rule")
        dst = Path(snakemake.output[table])
        tmp = temp_path(dst)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        log.info("%s -> %s", src, dst)
