"""Benchmark harness of the relay: `make bench` or `python -m bench.relay`.

`relay` is the driver (database, processes, phases, report); `clients` is the
load generator it runs in a separate process; `procs` reads /proc and starts
the processes; `report` turns the results into tables. See bench/README.md.
"""
