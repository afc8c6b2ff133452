"""Reports built from records: CSV, HTML, terminal tables, history and comparisons."""
