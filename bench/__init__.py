"""Benchmark harness of the relay: `make bench` or `python -m bench.relay`.

`relay` is the driver (database, processes, phases); `clients` is the load
generator it runs in a separate process; `bare_relay` is the smallest honest
relay on the same stack, measured beside the app; `procs` reads /proc and starts
the processes; `profiling` runs py-spy; `figures` groups the phases into rows and
`report` turns them into tables. `browser` (make bench-browser) measures the page
instead, on an app that `stack` starts. See bench/README.md.
"""
