"""Reading results: summaries, carbon, the centralized baseline and the comparison, plots,
terminal tables and the HTML report, all rebuilt from a ledger."""
