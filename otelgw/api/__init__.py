"""The query API (aiohttp): one module per resource, paths in routes.py."""
