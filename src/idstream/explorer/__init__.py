"""The profile explorer: a web page a worker serves to look into one person (docs/explorer.md)."""
