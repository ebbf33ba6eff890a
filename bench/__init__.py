"""Benchmarks: aiohttp-session-ws against raw aiohttp and python-socketio.

``python -m bench`` runs every scenario for the three implementations in one
run and writes the results, a table and a plot; see ``bench/README.md``.
"""
