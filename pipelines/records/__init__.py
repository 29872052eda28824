"""What runs leave behind: run records, reports, lineage views and model references."""
