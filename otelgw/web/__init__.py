"""The web UI's static files (static/): an ES-module app on vendored Preact + htm and uPlot,
served by the API process (otelgw/api/web.py). No build step: the files are what ships."""
