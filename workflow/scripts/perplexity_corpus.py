import polars as pl

from compbias.inference.perplexity import corpus_tokens
from compbias.inference.runtime import keep_torch_out
from compbias.io import write_parquet
from compbias.logs import log_to

with log_to(snakemake.log[0]) as log:
    keep_torch_out()
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(snakemake.input.checkpoint)
    data = corpus_tokens(tokenizer, snakemake.params.cfg)
    log.info("%d sequences of %d tokens", *data.shape)
    write_parquet(
        pl.DataFrame(
            {"seq_id": range(len(data)), "tokens": data.tolist()},
            schema={"seq_id": pl.Int64, "tokens": pl.List(pl.Int64)},
        ),
        snakemake.output[0],
    )
