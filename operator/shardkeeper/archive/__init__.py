"""How a node's files become chunks (tar + gzip | zstd | none) and back, streaming and checksummed."""
