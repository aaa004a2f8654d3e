"""segd next to DuckDB: one worker subprocess per engine, driven by ``runner``."""
