"""Test and benchmark fixtures that need no download: synthetic answers/items/variants tables
(:mod:`.synthetic`) and random-weight llama instruction models with a real tokenizer and chat
template (:mod:`.tiny`)."""
