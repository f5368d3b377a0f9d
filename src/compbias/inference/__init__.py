"""Running the models: where MLX runs and how models load (:mod:`.runtime`), prompts, the one
forward pass per item (:mod:`.scoring`), the keyed random numbers and samplers that couple draws
across variants (:mod:`.noise`, :mod:`.sampling`), answers per seed (:mod:`.answering`), their
continued decoding (:mod:`.decoder`), the scores and answers jobs (:mod:`.jobs`), merging answer
shards (:mod:`.merge`) and per-sequence perplexity losses (:mod:`.perplexity`)."""
