"""One module per console section; each exposes `router`, wired in console/routes.py."""
