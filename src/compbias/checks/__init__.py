"""Checks around a run: every input before the DAG is built (:mod:`.inputs`, :mod:`.preflight`:
BBQ files, model sources and hub repos (:mod:`.hub`), GGUF files, corpora, stale locks and
half-written outputs) and every output after it (:mod:`.verify`: shards and tables against their
schemas, checkpoints against their manifests). A failed check names the file, line or config key
and changes nothing."""
