from compbias.compress.gguf import convert_gguf, resolve_gguf
from compbias.logs import log_to

with log_to(snakemake.log[0]) as log:
    info = convert_gguf(resolve_gguf(snakemake.params.gguf), snakemake.output[0], snakemake.params.dtype)
    log.info("converted %s", info)
