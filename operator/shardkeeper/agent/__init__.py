"""The per-node participant: an aiohttp service next to the database, with the data volume mounted."""
