"""Study data: BBQ items read from upstream JSONL or a Hugging Face dataset, their bias targets
and stable shards (:mod:`.bbq`), the text corpora that perplexity and Wanda calibration read, and
the schemas of the Parquet tables that rules exchange."""
