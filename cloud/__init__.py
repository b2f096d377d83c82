"""The cloud tier: generation workers, model build/publish, fleet ingest and console."""
