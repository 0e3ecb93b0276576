"""A vLLM-compatible simulator: vLLM's OpenAI API, /health and /metrics without a GPU.

Used by CI, load tests, benchmarks and rollback drills. Start it with
`python -m app.simulator --host H --port P --model NAME`, or build the ASGI app with
`app.simulator.server.create_app(SimulatorConfig(...))`. See docs/simulator.md.
"""
